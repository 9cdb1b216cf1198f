"""The pool drill on real replicas: two inference-chat processes, each under its own supervisor (the
second one a stack of its own: another data dir and port offset, the same key store), a gateway whose
chat pool is both, and Locust's load while the second replica is killed with SIGKILL and restarted by
its supervisor. Ejection, client errors and readmission are judged; the traffic split is drawn.
The same across network namespaces: ``tests/test_netns.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import stack
from harness.faults.pool import NoPool, PoolDrill, PoolKill, PoolThresholds, judge
from harness.faults.pool_chart import split_by_second
from harness.load.samples import Sample
from suite.settings import Settings
from suite.testing import stack_settings

pytestmark = pytest.mark.integration


def up(settings: Settings, *only: str) -> None:
    args = [a for name in only for a in ("--only", name)]
    proc = stack.run_suite(["up", "--phase", "1", *args], settings, timeout=400)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def pool(tmp_path_factory, gemma_path):
    root = tmp_path_factory.mktemp("pool")
    second = stack_settings(root / "replica-2", gemma_path, auth={"key_store": str(root / "keys.db")})
    first = stack_settings(root / "main", gemma_path, auth={"key_store": str(root / "keys.db")})
    # the first replica is the main stack's own inference-chat; code is served by it too (one model less:
    # `urls` says where inference-code is, so the runbooks' preflight of phase 1 finds it there)
    first = Settings(**{**json.loads(first.model_dump_json()), "gateway": {
        "pools": {"chat": [first.url("inference-chat"), second.url("inference-chat")],
                  "code": [first.url("inference-chat")]}}, "urls": {"inference-code": first.url("inference-chat")}})
    try:
        up(second, "inference-chat")
        up(first, "inference-chat", "gateway")
        yield first, second
    finally:
        stack.run_suite(["down"], first, timeout=120)
        stack.run_suite(["down"], second, timeout=120)


def test_killing_one_replica_under_load_loses_no_request_and_it_comes_back(pool, tmp_path):
    first, second = pool
    victim = f"inference-chat@127.0.0.1:{second.port('inference-chat')}"
    drill = PoolDrill(first, tmp_path, "chat", victim, PoolThresholds(), users=4, pace_s=0.4, settle_s=2.0)
    rec = drill.run()
    results = {r.id.rsplit(".", 1)[1]: r for r in drill.results()}
    assert rec.eject_s is not None and rec.eject_s < 2.0, rec.eject_s
    assert results["ejection"].status == "pass", results["ejection"].detail
    assert results["errors"].status == "pass", results["errors"]
    assert results["readmission"].status == "pass", results["readmission"]
    assert rec.ready_at and rec.readmitted_at and rec.readmitted_at >= rec.ready_at
    # the traffic split: the survivor alone while the victim was out, the victim serving again after
    # (what it held at the kill was replayed, so those requests count as the survivor's)
    served = [(s.start, rec.served_by(s)) for s in rec.samples if rec.served_by(s)]
    meanwhile = {n for t, n in served if rec.ejected_at < t < rec.ready_at}
    after = {n for t, n in served if t > rec.readmitted_at}
    assert meanwhile == {"inference-chat"} and victim in after, served
    assert drill.figure.is_file() and "<svg" in drill.figure.read_text()
    assert "counted" in results["readmission"].detail and "since its restart" in results["readmission"].detail


def test_the_runbook_drills_the_pool_through_papermill(pool, tmp_path, monkeypatch):
    import papermill

    from harness.result import load_results
    first, second = pool
    for name, value in stack.cli_env(first).items():
        if name.startswith("SUITE_"):
            monkeypatch.setenv(name, value)
    book = Path(__file__).parents[1] / "runbooks" / "06_pool_drill.ipynb"
    run_dir = tmp_path / "run"
    papermill.execute_notebook(str(book), str(tmp_path / book.name), kernel_name="python3", progress_bar=False,
                               parameters={"run_dir": str(run_dir), "run_id": "test", "phase": 1, "pool_users": 3},
                               cwd=str(book.parent))
    results = {r.id: r for r in load_results(run_dir / "results" / "06_pool_drill.json")}
    assert set(results) == {"pool.chat.ejection", "pool.chat.errors", "pool.chat.readmission"}
    assert all(r.status == "pass" for r in results.values()), [(r.id, r.measured, r.detail) for r in results.values()]
    assert f"inference-chat@127.0.0.1:{second.port('inference-chat')}" in results["pool.chat.ejection"].title
    assert (run_dir / "figures" / "pool_drill_chat.svg").is_file()


def test_a_pool_of_one_is_not_drilled(tmp_path, gemma_path):
    from suite.testing import serve

    settings = stack_settings(tmp_path, gemma_path)
    with serve(settings, "gateway"):  # the gateway answers /health without its upstreams
        with pytest.raises(NoPool, match="two or more"):
            PoolDrill(settings, tmp_path, "chat").run()


def test_the_verdicts_and_the_split_from_a_recorded_drill():
    def s(start, name, ok=True, ms=100.0):
        return Sample(name, start, ms, ok, error=None if ok else "HTTP 503")

    rec = PoolKill("chat", "b", "http://b", ["a", "b"], 1, killed_at=100.0, ejected_at=100.05, ready_at=108.0,
                   readmitted_at=108.6, attempts_while_down=0, ended_at=112.0,
                   samples=[s(98.2, "chat @a"), s(98.7, "chat @b"), s(100.5, "chat @a"), s(101.0, "chat", ok=False),
                            *[s(100.0 + i, "chat @a") for i in range(2, 9)], s(109.2, "chat @b")],
                   own_counts={"a": ((10, 1.0), (20, 1.0)), "b": ((5, 1.0), (1, 2.0))})
    bins, served, failed = split_by_second(rec)
    assert bins[0] == -2 and served["b"][0] == 1 and served["a"][bins.index(0)] == 1 and sum(failed) == 1
    ejection, errors, readmission = judge(rec, PoolThresholds(), [])
    assert ejection.status == "pass" and ejection.value == 0.05
    assert errors.status == "fail" and errors.measured.startswith("1/9 failed")  # 11 % > 1 %
    assert readmission.status == "pass" and readmission.value == 0.6
    assert "a counted 10 completions itself" in readmission.detail and "b counted 1 completions itself since" \
        in readmission.detail
    slow = PoolKill("chat", "b", "http://b", ["a", "b"], 1, killed_at=100.0, ejected_at=None, ready_at=None,
                    ended_at=200.0, attempts_while_down=2)
    ejection, errors, readmission = judge(slow, PoolThresholds(), [])
    assert (ejection.status, errors.status, readmission.status) == ("fail", "fail", "fail")

"""Real Locust in a subprocess against real HTTP servers: a small FastAPI app on a free port for the
generic parts (request budget, streaming rows, 2 worker processes merged, early abort, extension to
decide a gate, the time cap, cut-off requests, a warm-up against a closed port, a box kept busy by an
outside process), and one short streamed-chat run against a real phase-1 stack."""

from __future__ import annotations

import json
import textwrap
from contextlib import contextmanager
from dataclasses import replace

import pytest

from harness.load import plan, run_plan, run_scenario
from harness.load.runner import LoadError, Workers, check_host
from harness.load.samples import read_samples
from harness.load.scenarios import SCENARIOS
from harness.load.stats import measure, percentile
from harness.load.thresholds import parse_threshold
from harness.load.verdicts import judge
from harness.result import Stage, Status
from suite.testing import start_app_process

FAKE_APP = textwrap.dedent('''
    import asyncio, itertools, json, os
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    counter = itertools.count(1)
    FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))
    SLOW_S = float(os.environ.get("SLOW_S", "0"))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def completions(request: Request):
        n = next(counter)
        await asyncio.sleep(SLOW_S or 0.02)
        if FAIL_EVERY and n % FAIL_EVERY == 0:
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        return {"choices": [{"text": "x", "index": 0}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        async def events():
            await asyncio.sleep(0.05)
            yield "data: " + json.dumps({"choices": [{"delta": {"role": "assistant"}}]}) + "\\n\\n"
            for i in range(body.get("max_tokens", 5)):
                await asyncio.sleep(0.01)
                yield "data: " + json.dumps({"choices": [{"delta": {"content": f" t{i}"}}]}) + "\\n\\n"
            yield "data: [DONE]\\n\\n"
        return StreamingResponse(events(), media_type="text/event-stream")
''')


def _start_app(tmp_path, **env):
    return start_app_process(tmp_path, "fake_app", FAKE_APP, env)


@contextmanager
def serving(folder, **env):
    """The fake app on a free port while the block runs: its URL."""
    proc, url = _start_app(folder, **env)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("fake")) as url:
        yield url


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("slow"), SLOW_S="8") as url:
        yield url


@pytest.fixture(scope="module")
def flaky(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("flaky"), FAIL_EVERY="3") as url:
        yield url


@pytest.mark.integration
def test_request_budget_is_exact_and_p95_matches_raw_samples(fake, tmp_path):
    sc = replace(SCENARIOS["code"], users=3, spawn_rate=3, requests=25)
    run = run_scenario(sc, fake, tmp_path / "code")
    assert run.exit_code == 0, run.log_tail()
    assert len(run.samples) == 25 and all(s.ok for s in run.samples)
    raw = [json.loads(line) for line in (tmp_path / "code" / "samples.jsonl").read_text().splitlines()]
    assert measure(run.samples, parse_threshold("p95<1s")) == percentile([r["ms"] for r in raw], 95)
    for name in ("locust_stats.csv", "locust.html", "locust.json", "locust.log"):
        assert (tmp_path / "code" / name).exists(), name


@pytest.mark.integration
def test_streaming_rows_and_warmup(fake, tmp_path):
    sc = replace(SCENARIOS["chat"], users=2, spawn_rate=2, requests=6, max_tokens=8)
    run = run_scenario(sc, fake, tmp_path / "chat", warmup_s=0.3)
    assert len(run.samples) == 6 and run.warmup_samples, run.log_tail()
    s = run.samples[0]
    assert s.tokens == 8 and s.ttft_ms >= 40 and s.itl_ms > 0 and s.tps > 0
    assert s.ms > s.ttft_ms + 6 * 9  # the whole stream, not just the headers
    rows = {r.name for r in run.rows()}
    assert {"chat stream", "chat stream · ttft", "chat stream · itl", "chat stream · tps"} <= rows
    # Locust shows the LLM metrics as rows of their own too
    assert "chat stream · ttft ms" in (tmp_path / "chat" / "locust_stats.csv").read_text()


@pytest.mark.integration
def test_two_worker_processes_merge_into_one_result(fake, tmp_path):
    sc = replace(SCENARIOS["code"], users=4, spawn_rate=4, requests=40)
    run = run_scenario(sc, fake, tmp_path / "dist", processes=2, max_run_s=60)
    assert run.exit_code == 0, run.log_tail()
    assert len(run.sample_files) == 2  # one raw file per worker process
    pids = {s.pid for s in run.samples}
    assert len(pids) == 2
    merged = read_samples(tmp_path / "dist" / "samples.jsonl")
    assert len(merged) == sum(len(read_samples(f)) for f in run.sample_files) >= 40
    assert [s.start for s in merged] == sorted(s.start for s in merged)


def locust_counted(out_dir) -> int:
    """Requests Locust itself counted (``locust.json``, every row but the LLM metric rows)."""
    return sum(e["num_requests"] for e in json.loads((out_dir / "locust.json").read_text()) if e["method"] != "METRIC")


@pytest.mark.integration
def test_distributed_workers_send_every_sample_to_the_master(fake, tmp_path):
    """``-p load_workers=2``: a master with --expect-workers 2 and two worker processes that share no
    folder with it: each sends its raw samples with its stats reports, and the master's files hold
    exactly the requests Locust counted."""
    sc = replace(SCENARIOS["code"], users=4, spawn_rate=4, requests=40)
    out = tmp_path / "workers"
    run = run_scenario(sc, fake, out, workers=Workers(2), max_run_s=60)
    assert run.exit_code == 0 and run.processes == 2, run.log_tail()
    assert [f.name for f in run.sample_files] == ["samples-worker-1.jsonl", "samples-worker-2.jsonl"]
    every = read_samples(out / "samples.jsonl")
    assert len({s.pid for s in every}) == 2 and len(run.samples) >= 40
    assert locust_counted(out) == sum(not s.censored for s in every)
    assert json.loads((out / "scenario.json").read_text())["workers"]["count"] == 2
    assert "2 workers connected" in (out / "locust.log").read_text()  # the master waited for both


QUIET = {"outside_cpu_limit_pct": 1000.0, "benchmark": False}  # judge the load, not this shared box


@pytest.mark.integration
def test_abort_on_a_gate_decided_against_and_verdicts(flaky, tmp_path):
    scs = plan("code", requests=600, thresholds="fail_ratio<0.01,p95<10s")
    outcome = next(run_plan(scs, _settings_for(flaky, tmp_path), tmp_path, abort_on_fail=True, base=tmp_path, **QUIET))
    by_id = {r.id: r for r in outcome.results}
    assert "fail_ratio<0.01 decided against" in outcome.run.aborted
    assert len(outcome.run.samples) < 600
    fr = by_id["load.code.fail_ratio"]
    assert fr.status is Status.FAIL and fr.target == "fail_ratio<0.01" and fr.stage is Stage.LOAD
    # the rest never ran: the p95 is not known to pass, and the run did not complete its count
    assert by_id["load.code.p95"].status is Status.INDETERMINATE and by_id["load.code.p95"].interval[1] is None
    run = by_id["load.code.run"]
    assert run.status is Status.FAIL and run.measured.startswith(f"{outcome.run.completed} of 600 completed")
    assert "code/locust.html" in by_id["load.code.p95"].evidence
    assert by_id["load.code.box"].status in (Status.INFO, Status.WARN)  # the box beside the gates


@pytest.mark.integration
def test_an_undecided_gate_extends_the_run_until_it_passes(fake, tmp_path):
    """20 requests cannot show a p95 under its target (no upper bound below 72 samples): the run
    extends itself, at the same concurrency, until the interval is under the target."""
    sc = replace(SCENARIOS["code"], users=3, spawn_rate=3, requests=20, budget=200, thresholds="p95<3000ms")
    run = run_scenario(sc, fake, tmp_path / "ext", extend_on=sc.targets())
    assert run.exit_code == 0, run.log_tail()
    assert 72 <= run.planned < 200 and run.completed == run.planned == len(run.samples), run.extensions
    assert run.extensions and run.extensions[0].startswith("20 -> ")
    results = {r.id: r for r in judge(run, sc.targets())}
    p95 = results["load.code.p95"]
    assert p95.status is Status.PASS and p95.interval[1] is not None and p95.interval[1] < 3000
    assert results["load.code.run"].measured.startswith(f"{run.planned} of {run.planned} completed")
    assert "20 stated, extended to" in results["load.code.run"].detail
    # without extension the same 20 requests leave the gate undecided, and say what would decide it
    short = run_scenario(sc, fake, tmp_path / "short")
    undecided = {r.id: r for r in judge(short, sc.targets())}["load.code.p95"]
    assert undecided.status is Status.INDETERMINATE and "about 52 more request(s) would decide it" in undecided.caveat


@pytest.mark.integration
def test_a_capped_scenario_is_not_a_pass_and_says_how_much_completed(slow, tmp_path):
    """Each request takes 8 s; the cap (4 s for the 6 requests) stops the run, the request in flight
    is cut off (1 s of stop timeout) and written as a censored sample, the rest never ran: failed."""
    sc = replace(SCENARIOS["code"], users=1, spawn_rate=1, requests=6, thresholds="p95<20s,fail_ratio<0.5")
    run = run_scenario(sc, slow, tmp_path / "capped", max_run_s=4, stop_timeout_s=1)
    assert run.capped.startswith("time cap reached: 4 s for 6 requests") and run.incomplete, run.log_tail()
    cut = [s for s in run.samples if s.censored]
    assert len(cut) == 1 and not cut[0].ok and cut[0].ms > 0 and "cut off" in cut[0].error  # timed from below
    results = {r.id: r for r in judge(run, sc.targets())}
    row = results["load.code.run"]
    assert row.status is Status.FAIL and row.measured.startswith("0 of 6 completed")
    assert "they count as failed" in row.detail
    assert results["load.code.fail_ratio"].status is Status.FAIL  # 6 of 6: cut off or never run
    assert results["load.code.p95"].status is Status.FAIL  # no request succeeded
    assert "no successful request" in results["load.code.p95"].detail


@pytest.mark.integration
def test_a_warm_up_against_a_closed_port_stops_at_its_first_error(tmp_path):
    from suite.net import free_port

    sc = replace(SCENARIOS["code"], users=2, spawn_rate=2, requests=20)
    run = run_scenario(sc, f"http://127.0.0.1:{free_port()}", tmp_path / "closed", warmup_s=2, max_run_s=30)
    assert len(run.warmup_samples) <= sc.users, len(run.warmup_samples)  # not thousands in two seconds
    assert len(run.samples) == 20 and not any(s.ok for s in run.samples)
    results = {r.id: r for r in judge(run, sc.targets())}
    assert not [r.id for r in results.values() if r.status is Status.PASS]
    assert results["load.code.run"].status is Status.FAIL and "no request succeeded" in results["load.code.run"].detail
    assert results["load.code.p95"].measured == "no samples" and "Connection refused" in results["load.code.p95"].detail


@pytest.mark.integration
def test_a_refused_connection_is_a_failed_sample_not_a_lost_one(tmp_path):
    from suite.net import free_port

    sc = replace(SCENARIOS["code"], users=1, spawn_rate=1, requests=5)
    run = run_scenario(sc, f"http://127.0.0.1:{free_port()}", tmp_path / "refused", max_run_s=30)
    assert len(run.samples) == 5, run.log_tail()
    assert not any(s.ok for s in run.samples)
    assert all("no answer" in s.error for s in run.samples)


def test_out_of_phase_scenarios_are_skipped(tmp_path):
    outcomes = list(run_plan(plan("rag,tools"), _settings_for("http://127.0.0.1:8000", tmp_path), tmp_path, phase=1,
                             **QUIET))
    assert [o.results[0].status for o in outcomes] == [Status.SKIP, Status.SKIP]
    assert "phase 2" in outcomes[0].results[0].detail


def test_only_loopback_hosts():
    assert check_host("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    with pytest.raises(LoadError, match="not loopback"):
        check_host("http://example.com:8000")


def _settings_for(url: str, data_dir):
    """Settings whose gateway URL is ``url`` (the fake app); the run's keys go to ``data_dir``."""
    from suite.settings import Settings

    # any free port, not just offsets ≤ 50000
    return Settings(ports={"gateway": int(url.rsplit(":", 1)[1])}, data_dir=data_dir / "data")


@pytest.mark.integration
def test_streamed_chat_against_a_real_stack(phase1, tmp_path):
    # maxima, not p95s: three samples bound no p95 from above (the run would extend to 72)
    scs = plan("chat", requests=3, max_tokens=8, thresholds="max<120s,ttft_max<60s,fail_ratio<0.5")
    outcome = next(run_plan(scs, phase1, tmp_path, phase=1, **QUIET))
    gates = [r for r in outcome.results if r.is_gate]  # ITL rows are shown (info), not judged
    assert gates and all(r.status is Status.PASS for r in gates), [str(r) for r in gates]
    assert {r.id for r in outcome.results if r.status is Status.INFO} <= {"load.chat.itl_p50", "load.chat.itl_p95",
                                                                          "load.chat.box"}
    assert len(outcome.run.samples) == 3 and all(s.tokens for s in outcome.run.samples)
    # the server-side view: the gateway counted what the client sent; the engine's own TTFT and slots
    server = next(r for r in outcome.results if r.id == "load.chat.server")
    assert server.measured.startswith("server 3 req (2xx 3; 429: 0) · client 3 (0 failed)"), server.measured
    assert "inference-chat: queue max" in server.detail and "slots busy max" in server.detail
    view = json.loads((outcome.run.out_dir / "server.json").read_text())
    chat = view["engines"]["inference-chat"]
    assert chat["ttft_p95_ms"] > 0 and 3 <= chat["tokens"] <= 3 * 8 and chat["slots"] == phase1.inference.slots
    assert 0 <= chat["active_max"] <= chat["slots"] and view["services"]["inference-chat"]["cpu_s"] > 0


def test_profiles_run_in_stages_and_named_scenarios_one_by_one():
    from harness.load.plan import LoadPlan

    seed = plan("")  # every seed gate alone on the stack, as the seed states it
    assert isinstance(seed, LoadPlan)
    assert [[s.name for s in stage] for stage in seed.stages] == [
        ["seed-100x5"], ["seed-50x3"], ["seed-20x2"], ["embedding", "tools"], ["rag"]]
    assert "seed-100x5 (100 requests at 5 users), then seed-50x3" in seed.describe()
    shorter = plan("", overlap=True)  # the -p overlap=true choice: stages side by side
    assert [[s.name for s in stage] for stage in shorter.stages] == [
        ["seed-100x5", "embedding"], ["seed-50x3", "seed-20x2", "tools"], ["rag"]]
    assert "seed-50x3 (50 requests at 3 users) + seed-20x2" in shorter.describe()
    named = plan("embedding,code,chat", requests=4)
    assert [[s.name for s in stage] for stage in named.stages] == [["code"], ["chat"], ["embedding"]]
    assert [[s.name for s in stage] for stage in plan("embedding,code,chat", overlap=True).stages] == [
        ["code"], ["chat", "embedding"]]
    assert all(s.requests == 4 for s in named)
    with pytest.raises(ValueError, match="unknown load profile"):
        plan("", profile="nope")


@pytest.mark.integration
def test_the_tools_scenario_has_a_key_and_budget_of_its_own(tmp_path):
    """The tool server's budget is per key and minute: a run key the runbooks before spent leaves the
    tools scenario 429s; the key minted for the scenario (owned by the run) still has all of it, and
    the pace set for it keeps the scenario's calls inside 80 % of it."""
    import httpx

    from harness.keys import bearer, run_keys
    from harness.load.plan import load_env, tools_pace
    from suite.auth.keys import KeyStore
    from suite.testing import serve, stack_settings

    settings = stack_settings(tmp_path, tools={"rate_limit_per_minute": 10})
    with serve(settings, "memory", "tools"):
        url = settings.url("tools") + "/tools/read_file"
        shared = run_keys(settings)
        env = load_env(settings, SCENARIOS["tools"])
        own = env["LOAD_API_KEY"]
        assert own not in (shared.developer, shared.guest, shared.admin)
        codes = [httpx.post(url, json={"path": env["LOAD_TOOLS_FILE"]}, headers=bearer(shared.developer),
                            timeout=30).status_code for _ in range(11)]
        assert codes[-1] == 429  # the run's developer key: budget spent
        assert httpx.post(url, json={"path": env["LOAD_TOOLS_FILE"]}, headers=bearer(own),
                          timeout=30).status_code == 200
        minted = [k for k in KeyStore.open(settings.key_store_path).list() if k.get("run_id") == shared.run_id]
        assert len(minted) == 4  # the run's three and the scenario's: revoked with the run
    tools = SCENARIOS["tools"]
    calls_per_minute = tools_pace(settings, tools) * tools.users * 60
    assert calls_per_minute <= 0.8 * settings.tools.rate_limit_per_minute  # 30 calls do not fit in 8
    roomy = settings.model_copy(update={"tools": settings.tools.model_copy(update={"rate_limit_per_minute": 900})})
    # paced for the budget it may extend to (100 requests), not only its stated 30
    assert tools_pace(roomy, tools) * tools.users == pytest.approx((tools.budget + 4 * tools.users) / 10, abs=0.01)

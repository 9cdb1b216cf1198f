"""The capacity search (doubling, bisection, over-saturation, the knee) on modelled probes, and real
Locust runs against a fake server with a fixed number of slots: an open-model run above capacity
whose latencies grow with the backlog, and a capacity search that finds the slots."""

from __future__ import annotations

import json
import textwrap
from contextlib import contextmanager
from dataclasses import replace

import pytest

from harness.load import capacity as cap_mod
from harness.load import run_scenario, saturation
from harness.load.capacity import Probe, knee, search
from harness.load.samples import Sample, read_samples
from harness.load.scenarios import SCENARIOS
from harness.load.verdicts import judge
from harness.result import Status
from suite.testing import start_app_process


def modelled(capacity: float, undecided: tuple = (), saturated_above: float | None = None):
    """A probe function for a stack that meets its SLO up to ``capacity``, and the levels it was asked."""
    asked = []

    def probe(level: float) -> Probe:
        asked.append(level)
        status = Status.INDETERMINATE if level in undecided else Status.PASS if level <= capacity else Status.FAIL
        sat = "over-saturated: queue rising" if saturated_above is not None and level > saturated_above else ""
        return Probe("users", level, status, 0.99 if status is Status.PASS else 0.5, (0.95, 1.0), 100,
                     throughput=min(level, capacity), saturated=sat)
    return probe, asked


def test_doubling_then_bisection_to_within_ten_percent():
    probe, asked = modelled(13)
    found = search(probe, "users", 1, ceiling=64)
    assert asked == [1, 2, 4, 8, 16, 12, 14, 13]  # double to the first miss, then bisect 8..16
    assert found.value == 13 and found.worst.level == 14 and found.stop.startswith("converged")
    probe, asked = modelled(2.6)
    rates = search(probe, "rate", 0.5, ceiling=16, integer=False)
    assert rates.value <= 2.6 < rates.worst.level and rates.worst.level - rates.value <= 0.1 * rates.value
    assert asked[:4] == [0.5, 1.0, 2.0, 4.0]


def test_the_ceiling_the_floor_undecided_and_over_saturated_probes():
    probe, asked = modelled(100)
    found = search(probe, "users", 1, ceiling=8)
    assert asked == [1, 2, 4, 8] and found.value == 8 and "at least that" in found.stop
    probe, asked = modelled(0)
    none = search(probe, "users", 1, ceiling=8)
    assert none.value is None and asked == [1] and none.stop.startswith("no level down to 1 users")
    probe, asked = modelled(0.3)
    walked = search(probe, "rate", 2.0, ceiling=32, integer=False)
    assert asked[:4] == [2.0, 1.0, 0.5, 0.25] and 0.25 <= walked.value <= 0.3 < walked.worst.level
    # an undecided probe is not counted as a pass: the capacity claimed is only what was proven
    probe, asked = modelled(13, undecided=(8,))
    careful = search(probe, "users", 1, ceiling=64)
    assert careful.value == 7 and careful.worst.level == 8
    # over-saturated: a failure whatever its attainment says
    probe, asked = modelled(100, saturated_above=3)
    stopped = search(probe, "users", 1, ceiling=64)
    assert stopped.value == 3 and stopped.worst.saturated
    probe, asked = modelled(1000)
    budget = search(probe, "users", 1, ceiling=10_000, max_probes=4)
    assert len(asked) == 4 and budget.stop.startswith("probe budget spent")


def test_the_knee_is_where_throughput_stops_growing_in_proportion():
    def p(level, rps):
        return Probe("users", level, Status.PASS, throughput=rps)
    assert knee([p(1, 1.0), p(2, 2.0), p(4, 3.9), p(8, 4.4), p(16, 4.5)]).level == 4
    assert knee([p(1, 1.0), p(2, 2.0), p(4, 4.0)]) is None  # straight: no bend
    assert knee([p(1, 1.0), p(2, 2.0)]) is None


def sample(t, in_flight, ttft):
    return Sample("chat stream", t, ttft + 500, True, ttft_ms=ttft, in_flight=in_flight)


def test_over_saturation_needs_the_queue_and_ttft_both_rising():
    growing = [sample(t, int(t * 0.8), 200 + 150 * t) for t in range(30)]
    found = saturation.detect(growing)
    assert found is not None and found.queue.slope > 0 and "over-saturated" in found.describe()
    steady = [sample(t, 3 + t % 2, 400 + 30 * (t % 3)) for t in range(30)]
    assert saturation.detect(steady) is None
    queue_only = [sample(t, t, 400 + 30 * (t % 3)) for t in range(30)]
    assert saturation.detect(queue_only) is None
    assert saturation.detect(growing[:8]) is None  # too few, too early
    closed = [replace(s, in_flight=None) for s in growing]  # a closed loop carries no queue
    assert saturation.detect(closed) is None


SLOTS_APP = textwrap.dedent('''
    import asyncio, json, os
    from fastapi import FastAPI, Request
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    slots = asyncio.Semaphore(int(os.environ["SLOTS"]))
    TOKEN_S = float(os.environ["TOKEN_S"])

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        await slots.acquire()  # a server with a fixed number of slots: the rest wait in its queue
        async def events():
            try:
                yield "data: " + json.dumps({"choices": [{"delta": {"role": "assistant"}}]}) + "\\n\\n"
                for i in range(body.get("max_tokens", 5)):
                    await asyncio.sleep(TOKEN_S)
                    yield "data: " + json.dumps({"choices": [{"delta": {"content": f" t{i}"}}]}) + "\\n\\n"
                yield "data: [DONE]\\n\\n"
            finally:
                slots.release()
        return StreamingResponse(events(), media_type="text/event-stream")
''')


@contextmanager
def slots_server(folder, slots: int, token_s: float):
    proc, url = start_app_process(folder, "slots_app", SLOTS_APP, {"SLOTS": str(slots), "TOKEN_S": str(token_s)})
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.integration
def test_an_open_model_run_above_capacity_shows_the_backlog(tmp_path):
    """2 slots, 4 tokens of 50 ms: 0.2 s a request, 10 req/s at most. Poisson arrivals at 16 req/s:
    latency, counted from each request's scheduled start, grows with the backlog; the samples say how
    late each was sent and how many were ahead of it; the same seed gives the same timetable."""
    with slots_server(tmp_path, slots=2, token_s=0.05) as url:
        sc = replace(SCENARIOS["chat-poisson"], rate=16, users=64, requests=80, budget=80, max_tokens=4, seed=7)
        run = run_scenario(sc, url, tmp_path / "over")
    assert run.exit_code == 0 and len(run.samples) == 80, run.log_tail()
    ordered = sorted(run.samples, key=lambda s: s.start)
    first, last = ordered[:15], ordered[-15:]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    assert mean([s.ttft_ms for s in last]) > 3 * mean([s.ttft_ms for s in first])
    assert max(s.in_flight for s in last) > 10 and all(s.lag_ms is not None for s in run.samples)
    assert saturation.detect(run.samples, min_seconds=2) is not None  # 80 arrivals span 5 s
    gaps = [b.start - a.start for a, b in zip(ordered, ordered[1:])]
    assert 0.5 / 16 < mean(gaps) < 2 / 16  # Poisson at 16 req/s, measured from the scheduled starts
    raw = [json.loads(line) for line in (tmp_path / "over" / "samples.jsonl").read_text().splitlines()]
    assert all("lag_ms" in r and "in_flight" in r for r in raw if not r["warmup"])
    results = {r.id: r for r in judge(run, sc.targets(), figures=sc.figures())}
    assert results["load.chat-poisson.attainment"].status is Status.FAIL
    assert "open model: Poisson arrivals at 16 req/s (seed 7)" in results["load.chat-poisson.run"].detail
    assert "after their scheduled start" in results["load.chat-poisson.run"].detail
    # SLO attainment recomputed from samples.jsonl by hand: every objective's bound, failures missed
    slo = sc.service_level()
    met = sum(1 for r in raw if not r["warmup"] and r["ok"] and r["ttft_ms"] < 3000 and r["itl_ms"] < 500
              and r["ms"] < 15000)
    assert results["load.chat-poisson.attainment"].value == pytest.approx(met / 80)
    assert str(slo) == sc.slo


@pytest.mark.integration
def test_a_capacity_search_finds_the_slots_and_draws_the_curve(tmp_path):
    """3 slots, 5 tokens of 40 ms: up to 3 users a request takes ~0.2 s, beyond it waits a whole
    request for a slot. SLO: TTFT < 150 ms for 90 % -> 3 concurrent users (4 fails)."""
    from suite.settings import Settings

    with slots_server(tmp_path, slots=3, token_s=0.04) as url:
        port = int(url.rsplit(":", 1)[1])
        settings = Settings(data_dir=tmp_path / "data", ports={"gateway": port})
        base = replace(SCENARIOS["chat"], max_tokens=5, slo="ttft_p95<150ms,attainment>=90%")
        found = cap_mod.measure(settings, base, tmp_path / "capacity", max_users=8, rate_search=True, max_probes=4,
                                warmup_s=0.5, benchmark=False, outside_cpu_limit_pct=1000.0, base=tmp_path,
                                extra_env={})
    assert found.users.value == 3, [p.verdict() for p in found.users.probes]
    assert [p.level for p in found.users.probes][:3] == [1, 2, 4]
    assert found.rate is not None and found.rate.probes
    sentence = found.sentence()
    assert sentence.startswith("This stack serves 3 concurrent chat users") and "95 % CI" in sentence
    rows = {r.id: r for r in cap_mod.results(found, tmp_path, stated_users=2)}
    assert rows["load.capacity.chat.users"].value == 3 and rows["load.capacity.chat.users"].unit == "users"
    probe_row = rows["load.capacity.chat.4-users"]
    assert probe_row.value < 0.9 and probe_row.interval is not None
    assert read_samples(tmp_path / probe_row.evidence[0])  # the probe's raw samples are kept
    from harness.load.charts import capacity_curve

    capacity_curve(found, tmp_path / "curve.svg")
    assert "<svg" in (tmp_path / "curve.svg").read_text()
    saved = json.loads(found.save(tmp_path / "capacity.json").read_text())
    assert saved["users"]["capacity"] == 3 and saved["sentence"] == sentence

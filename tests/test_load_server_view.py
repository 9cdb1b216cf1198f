"""Server-side view of a load scenario from /metrics snapshots: counter deltas, histogram
percentiles computed as PromQL does, engine gauges sampled between, and when to warn."""

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from prometheus_client import generate_latest

from harness.load.runner import LoadRun
from harness.load.samples import Sample
from harness.load.scenarios import SCENARIOS
from harness.load.scrape import bucket_deltas, parse, quantile, scrape
from harness.load.server_view import MetricsSampler, record, view
from harness.result import Status
from suite.instrument import instrument
from suite.testing import ServerThread


def exposition(service, requests, start=100.0, queue=0, active=0, ttft=(), latencies=(), status="200",
               cache=None):
    """/metrics text of a gateway-like or engine-like service, built with prometheus_client itself."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    reg = CollectorRegistry()
    c = Counter("http_requests_total", "", ["service", "method", "route", "status"], registry=reg)
    h = Histogram("http_request_duration_seconds", "", ["service", "method", "route"], registry=reg,
                  buckets=(0.1, 0.5, 1, 2.5))
    for _ in range(requests):
        c.labels(service, "POST", "/v1/completions", status).inc()
    for x in latencies:
        h.labels(service, "POST", "/v1/completions").observe(x)
    c.labels(service, "GET", "/ready", "200").inc(50)  # probes: never counted as load
    Gauge("process_start_time_seconds", "", registry=reg).set(start)
    Counter("process_cpu_seconds", "", registry=reg).inc(requests / 10)
    Gauge("process_resident_memory_bytes", "", registry=reg).set(250e6)
    Gauge("inference_queue_depth", "", ["service"], registry=reg).labels(service).set(queue)
    Gauge("inference_active_slots", "", ["service"], registry=reg).labels(service).set(active)
    Gauge("inference_slots", "", ["service"], registry=reg).labels(service).set(4)
    t = Histogram("inference_time_to_first_token_seconds", "", ["service"], registry=reg, buckets=(0.1, 0.5, 1))
    for x in ttft:
        t.labels(service).observe(x)
    if cache is not None:  # the engine's prefix-cache counters: reused, prefilled, hits, lookups
        for name, value in zip(("inference_prompt_tokens_reused", "inference_prompt_tokens_prefilled",
                                "inference_prefix_cache_hits", "inference_prefix_cache_lookups"), cache):
            Counter(name, "", ["service"], registry=reg).labels(service).inc(value)
    return generate_latest(reg).decode()


def run_of(n_ok, n_failed=0, out_dir=Path("/tmp")):
    samples = [Sample("code completion", 1000.0 + i, 300.0, True) for i in range(n_ok)]
    samples += [Sample("code completion", 2000.0 + i, 5.0, False, error="HTTP 429: busy") for i in range(n_failed)]
    return LoadRun(SCENARIOS["code"], "http://127.0.0.1:1", out_dir, 1, 0.0, 0, "now", 1.0, samples)


class FakeWatch:
    def __init__(self, before, after, samples=()):
        self.before, self.after, self.samples = before, after, list(samples)


def test_histogram_quantile_interpolates_like_promql():
    buckets = {0.1: 0.0, 0.5: 10.0, 1.0: 20.0, float("inf"): 20.0}
    assert quantile(0.5, buckets) == pytest.approx(0.5)
    assert quantile(0.95, buckets) == pytest.approx(0.95)  # 0.5 + 0.5 * (19 - 10) / 10
    assert quantile(0.99, {1.0: 1.0, 2.5: 1.0, float("inf"): 4.0}) == 2.5  # in +Inf: the highest finite bound
    assert quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None


def test_counts_percentiles_and_engine_gauges_match_the_client(tmp_path):
    before = {"gateway": parse("gateway", exposition("gateway", 5, latencies=[0.05] * 5)),
              "inference-code": parse("inference-code", exposition("inference-code", 0))}
    after = {"gateway": parse("gateway", exposition("gateway", 25, latencies=[0.05] * 5 + [0.3] * 20)),
             "inference-code": parse("inference-code", exposition("inference-code", 20, ttft=[0.2] * 19 + [0.8]))}
    between = [parse("inference-code", exposition("inference-code", 10, queue=q, active=a))
               for q, a in ((2, 4), (5, 4), (0, 3))]
    v = view(SCENARIOS["code"], run_of(20), FakeWatch(before, after, between))
    assert v.server.requests == 20 and v.server.by_class == {"2xx": 20} and not v.mismatch
    assert v.server.p95_ms == pytest.approx(480.0)  # 0.1 + 0.4 * 19/20 s, inside the 0.1-0.5 bucket
    engine = v.engines["inference-code"]
    assert (engine.queue_max, engine.active_max, engine.slots) == (5, 4, 4)
    assert engine.ttft_p50_ms == pytest.approx(100 + 400 * 10 / 19, abs=0.1)  # rank 10 of 19 in 0.1-0.5 s
    assert engine.tokens is None and engine.rejected is None  # this engine has no such counters
    assert v.services["gateway"].cpu_s == pytest.approx(2.0) and v.services["gateway"].rss_mb == 250.0
    chat_idle = {**before, "inference-chat": parse("inference-chat", exposition("inference-chat", 0))}
    assert list(view(SCENARIOS["code"], run_of(20), FakeWatch(chat_idle, {**after, "inference-chat": chat_idle[
        "inference-chat"]}, between)).engines) == ["inference-code"]  # the chat engine: not this scenario's
    result = record(SCENARIOS["code"], run_of(20, out_dir=tmp_path), FakeWatch(before, after, between), tmp_path)
    assert result.status is Status.PASS and result.id == "load.code.server"
    assert result.measured.startswith("server 20 req (2xx 20; 429: 0) · client 20 (0 failed)")
    assert "inference-code: queue max 5, slots busy max 4/4" in result.detail
    assert (tmp_path / "server.json").is_file() and result.evidence == ["server.json"]


def test_the_prefix_cache_hit_ratio_is_the_scenarios_share_of_reused_prompt_tokens(tmp_path):
    before = {"gateway": parse("gateway", exposition("gateway", 0)),
              "inference-code": parse("inference-code", exposition("inference-code", 0, cache=(500, 500, 2, 4)))}
    after = {"gateway": parse("gateway", exposition("gateway", 20)),
             "inference-code": parse("inference-code", exposition("inference-code", 20,
                                                                  cache=(9500, 1500, 20, 24)))}
    engine = view(SCENARIOS["code"], run_of(20), FakeWatch(before, after)).engines["inference-code"]
    assert (engine.prompt_tokens_reused, engine.prompt_tokens_prefilled) == (9000, 1000)
    assert engine.hit_ratio == pytest.approx(0.9) and (engine.cache_hits, engine.cache_lookups) == (18, 20)
    result = record(SCENARIOS["code"], run_of(20, out_dir=tmp_path), FakeWatch(before, after), tmp_path)
    assert "prefix cache 90 % of prompt tokens reused (18 of 20 prompts started from a cached prefix)" in result.detail
    assert json.loads((tmp_path / "server.json").read_text())["engines"]["inference-code"]["hit_ratio"] == 0.9
    no_cache = {"gateway": before["gateway"], "inference-code": parse("inference-code", exposition("inference-code", 0))}
    old = view(SCENARIOS["code"], run_of(20), FakeWatch(no_cache, no_cache)).engines["inference-code"]
    assert old.hit_ratio is None  # an engine without the counters (or no prompts): no ratio, not 0 %


def test_a_count_mismatch_or_a_restart_is_a_warning(tmp_path):
    before = {"gateway": parse("gateway", exposition("gateway", 0))}
    after = {"gateway": parse("gateway", exposition("gateway", 18, status="429"))}
    result = record(SCENARIOS["code"], run_of(17, 3, tmp_path), FakeWatch(before, after), tmp_path)
    assert result.status is Status.WARN
    assert "client sent 20 request(s), gateway counted 18" in result.detail
    assert "4xx 18" in result.measured and "HTTP 429 x3" in result.detail
    restarted = {"gateway": parse("gateway", exposition("gateway", 20, start=999.0))}
    result = record(SCENARIOS["code"], run_of(20, out_dir=tmp_path), FakeWatch(before, restarted), tmp_path)
    assert result.status is Status.WARN and "restarted during the scenario" in result.detail
    # a scenario that calls several services is shown, not compared
    mixed = view(SCENARIOS["mixed"], run_of(20), FakeWatch(before, after))
    assert not mixed.compared and not mixed.mismatch


def test_watch_scrapes_real_process_metrics(settings):
    app = FastAPI()
    instrument(app, "gateway", settings=settings)
    with ServerThread(app, port=settings.port("gateway")):
        snap = scrape("gateway", settings.url("gateway") + "/metrics")
        assert snap.ok and snap.get("process_resident_memory_bytes") > 1e6
        assert snap.get("process_cpu_seconds_total") > 0 and snap.started
        with MetricsSampler(settings, ["gateway", "memory"], every_s=0.2) as watch:
            import httpx

            for _ in range(3):
                httpx.get(settings.url("gateway") + "/nothing-here")
    assert watch.before["gateway"].ok and not watch.after["memory"].ok  # nothing serves memory
    buckets = bucket_deltas(watch.before["gateway"], watch.after["gateway"], "http_request_duration_seconds")
    assert buckets[float("inf")] == 3


def test_scenarios_run_together_are_compared_by_the_service_they_share(tmp_path):
    """seed-50x3 and seed-20x2 both enter the gateway: neither is compared alone, their sum is; RAG
    beside them reaches the gateway too, so no sum can be attributed."""
    from harness.load.server_view import entry_groups, record_group, sharing

    chat = [SCENARIOS["seed-50x3"], SCENARIOS["seed-20x2"]]
    assert sharing(chat) == {"seed-50x3": ["seed-20x2"], "seed-20x2": ["seed-50x3"]}
    assert entry_groups(chat) == {"gateway": ["seed-50x3", "seed-20x2"]}
    assert entry_groups([*chat, SCENARIOS["rag"]]) == {}
    light = [SCENARIOS["seed-100x5"], SCENARIOS["embedding"], SCENARIOS["tools"]]
    assert sharing(light) == {} and entry_groups(light) == {}
    assert sharing([SCENARIOS["rag"], SCENARIOS["embedding"]]) == {"embedding": ["rag"]}

    before = {"gateway": parse("gateway", exposition("gateway", 0))}
    after = {"gateway": parse("gateway", exposition("gateway", 30))}
    alone = record(chat[0], run_of(20, out_dir=tmp_path), FakeWatch(before, after), tmp_path,
                   shared_with=["seed-20x2"])
    assert alone.status is Status.PASS and alone.target == "server counters read"
    assert "ran together with seed-20x2" in alone.detail
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runs = [(chat[0], run_of(20, out_dir=tmp_path / "a")), (chat[1], run_of(10, out_dir=tmp_path / "b"))]
    both = record_group("gateway", runs, FakeWatch(before, after), tmp_path)
    assert both.id == "load.seed-50x3+seed-20x2.server" and both.status is Status.PASS
    assert both.measured.startswith("server 30 req") and "clients 30 (0 failed)" in both.measured
    assert (tmp_path / "seed-50x3+seed-20x2.server.json").is_file()
    short = record_group("gateway", runs[:1], FakeWatch(before, after), tmp_path)
    assert short.status is Status.WARN and "clients sent 20 request(s), gateway counted 30" in short.detail


def test_a_watch_samples_only_the_engines_its_scenario_reaches(settings):
    """Each scrape costs the engine's process CPU its decode loop shares: a tools scenario samples no
    engine, a code scenario only the code model's."""
    from harness.load import server_view
    from harness.load.server_view import MetricsSampler

    names = ["gateway", "inference-chat", "inference-code", "tools"]
    assert MetricsSampler(settings, names).engines == ["inference-chat", "inference-code"]
    for scenario, expected in (("tools", []), ("code", ["inference-code"]), ("rag", ["inference-chat"])):
        assert MetricsSampler(settings, names, engines=server_view.engines_of(SCENARIOS[scenario])).engines == expected

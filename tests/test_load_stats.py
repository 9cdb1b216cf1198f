"""Exact percentiles against hand-computed values, sample merging, and early loss of a threshold."""

import json

import pytest

from harness.load.samples import Sample, merge_samples, read_samples, sample_files, split_warmup
from harness.load.scenarios import SCENARIOS, select_scenarios, with_overrides
from harness.load.stats import measure, percentile, table, window_s
from harness.load.thresholds import parse_threshold

# 20 known durations (ms), shuffled
DURATIONS = [120, 15, 300, 45, 77, 1000, 5, 60, 88, 250, 33, 410, 999, 12, 150, 75, 640, 20, 95, 2000]
# sorted: 5 12 15 20 33 45 60 75 77 88 | 95 120 150 250 300 410 640 999 1000 2000


def samples(durations, ok=None, name="r", start=100.0, step=0.5, **extra):
    ok = ok or [True] * len(durations)
    return [Sample(name=name, start=start + i * step, ms=float(d), ok=o, **extra)
            for i, (d, o) in enumerate(zip(durations, ok))]


@pytest.mark.parametrize("p, expected", [
    (50, 88),    # ceil(0.50*20)=10th
    (90, 999),   # ceil(0.90*20)=18th
    (95, 1000),  # ceil(0.95*20)=19th
    (99, 2000),  # ceil(0.99*20)=20th
    (100, 2000),
    (1, 5),      # ceil(0.2)=1st
    (66, 250),   # ceil(13.2)=14th
])
def test_nearest_rank_percentiles(p, expected):
    assert percentile(DURATIONS, p) == expected


def test_percentile_small_and_empty():
    assert percentile([7.5], 95) == 7.5
    assert percentile([], 95) is None
    assert percentile([1, 2, 3, 4], 50) == 2  # nearest rank, never interpolated
    assert percentile([1, 2, 3, 4], 75) == 3
    with pytest.raises(ValueError):
        percentile([1], 0)


def test_measure_metrics():
    ss = samples(DURATIONS, ok=[True] * 19 + [False])
    assert measure(ss, parse_threshold("p95<1s")) == 1000
    assert measure(ss, parse_threshold("fail_ratio<0.1")) == pytest.approx(0.05)
    assert measure(ss, parse_threshold("count>1")) == 20
    assert measure(ss, parse_threshold("max<1s")) == 2000
    assert measure(ss, parse_threshold("avg<1s")) == pytest.approx(sum(DURATIONS) / 20)
    # window: first start 100.0 to the last end 100 + 19*0.5 + 2.0 = 111.5
    assert window_s(ss) == pytest.approx(11.5)
    assert measure(ss, parse_threshold("rps>1")) == pytest.approx(20 / 11.5)
    assert measure(ss, parse_threshold("p95{other}<1s")) is None


def test_llm_metrics_and_rows():
    llm = [Sample("chat stream", 1.0 + i, 1000.0 + i, True, ttft_ms=100.0 * (i + 1), itl_ms=20.0, tps=40.0 + i)
           for i in range(10)]
    code = samples([10, 20], name="code")
    ss = llm + code
    assert measure(ss, parse_threshold("ttft_p95<1s")) == 1000.0  # ceil(9.5)=10th of 100..1000
    assert measure(ss, parse_threshold("tps_p50>1")) == 44.0  # 5th of 40..49
    assert measure(ss, parse_threshold("p50{code}<1s")) == 10
    names = [r.name for r in table(ss, label="all")]
    assert names == ["chat stream", "chat stream · ttft", "chat stream · itl", "chat stream · tps", "code", "all"]


def test_merge_orders_by_start_and_skips_torn_line(tmp_path):
    a = tmp_path / "samples-1.jsonl"
    b = tmp_path / "samples-2.jsonl"
    a.write_text("\n".join(json.dumps({"name": "x", "start": t, "ms": 1, "ok": True, "pid": 1}) for t in (1, 3, 5)) + "\n")
    b.write_text("\n".join(json.dumps({"name": "x", "start": t, "ms": 2, "ok": True, "pid": 2}) for t in (2, 4))
                 + '\n{"name": "x", "sta')  # a worker killed mid-write
    assert sample_files(tmp_path) == [a, b]
    merged = merge_samples(sample_files(tmp_path), tmp_path / "samples.jsonl")
    assert [s.start for s in merged] == [1, 2, 3, 4, 5]
    assert [s.pid for s in merged] == [1, 2, 1, 2, 1]
    assert read_samples(tmp_path / "samples.jsonl") == merged
    assert sample_files(tmp_path) == [a, b]  # the merged file is not a per-process file


def test_warmup_split():
    ss = samples([1, 2, 3]) + [Sample("r", 0.0, 50.0, True, warmup=True)]
    measured, warm = split_warmup(ss)
    assert len(measured) == 3 and len(warm) == 1


def test_scenario_selection_and_overrides():
    assert [s.name for s in select_scenarios("seed")] == ["seed-100x5", "seed-50x3", "seed-20x2"]
    with pytest.raises(ValueError, match="unknown load scenario 'nope'"):
        select_scenarios("code,nope")
    sc = with_overrides(SCENARIOS["code"], users=4, duration_s=10, thresholds="p95<1ms")
    assert (sc.users, sc.spawn_rate, sc.requests, sc.duration_s, sc.thresholds) == (4, 4, 0, 10, "p95<1ms")
    assert sc.budget == 0  # a timed run has nothing to extend
    assert with_overrides(SCENARIOS["code"], requests=40).budget == 200  # the budget keeps its proportion (20 of 100)
    with pytest.raises(ValueError):
        with_overrides(SCENARIOS["code"], thresholds="p95 soon")
    for scenario in SCENARIOS.values():  # every default target parses and every locustfile exists
        scenario.targets()
        assert scenario.locustfile_path.is_file(), scenario.locustfile

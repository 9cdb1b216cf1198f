"""CheckResult, its JSON files, and the runbook gate."""

import json

import pytest

from harness.errors import ChecksFailed
from harness.notebook import Runbook
from harness.result import CHECK_OUTCOMES, CheckResult, Stage, Status, load_results, save_results, summarize


def test_round_trip_and_status_validation(tmp_path):
    r = CheckResult("a.b", "A", "health", "pass", target="HTTP 200", measured="3.0 ms", evidence="x.json")
    assert r.status is Status.PASS and r.evidence == ["x.json"] and r.ok
    path = save_results([r, CheckResult("c", "C", "health", Status.FAIL)], tmp_path / "r.json")
    loaded = load_results(path)
    assert loaded[0] == r and loaded[1].status is Status.FAIL and not loaded[1].ok
    assert json.loads(path.read_text())[0]["status"] == "pass"
    assert summarize(loaded) == {"pass": 1, "fail": 1, "indeterminate": 0, "warn": 0, "skip": 0, "info": 0}
    with pytest.raises(ValueError):
        CheckResult("x", "X", "health", "passed")


def test_gate_saves_results_before_failing(tmp_path):
    rb = Runbook.open(str(tmp_path / "run"), "02_health")
    rb.record([CheckResult("ok", "fine", "health", "pass"), CheckResult("bad", "broken", "health", "fail"),
               CheckResult("w", "warned", "health", "warn")])
    with pytest.raises(ChecksFailed, match="bad") as info:
        rb.gate()
    assert info.value.failed == ["bad"]
    assert [r.id for r in load_results(rb.results_file)] == ["ok", "bad", "w"]


def test_gate_passes_warnings_and_skips(tmp_path):
    rb = Runbook.open(str(tmp_path / "run"), "00_validate_env")
    rb.record([CheckResult("w", "W", "environment", "warn"), CheckResult("s", "S", "environment", "skip")])
    assert rb.gate() == {"pass": 0, "fail": 0, "indeterminate": 0, "warn": 1, "skip": 1, "info": 0}


def test_result_files_written_before_stage_and_one_status_vocabulary_still_load(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps([{"id": "x", "title": "X", "phase": "smoke", "status": "pass", "measured": "1.0 ms"}]))
    [r] = load_results(old)
    assert r.stage is Stage.SMOKE and "phase" not in r.to_dict() and r.to_dict()["stage"] == "smoke"
    assert [Status.parse(s) for s in ("passed", "failed", "skipped", "running")] == \
        [Status.PASS, Status.FAIL, Status.SKIP, Status.RUNNING]


def test_a_check_cannot_end_in_a_step_state_or_an_unknown_stage():
    with pytest.raises(ValueError, match="a check ends"):
        CheckResult("x", "X", Stage.HEALTH, Status.RUNNING)
    with pytest.raises(ValueError, match="unknown stage 'phase-2'"):
        CheckResult("x", "X", "phase-2", Status.PASS)


def test_every_status_has_a_colour_and_a_table_renders_each(tmp_path):
    from harness.palette import status_color

    assert {s: status_color(s) for s in Status}  # a KeyError here broke 05_load's server table once
    rb = Runbook.open(str(tmp_path / "run"), "05_load")
    rb.record([CheckResult(f"c.{s.value}", s.value, "load", s) for s in CHECK_OUTCOMES])
    html = rb.table().data
    assert all(s.label in html for s in CHECK_OUTCOMES)


def _bound_read(target: str) -> bool:
    from harness.result import parse_bound

    unit = "GB" if "GB" in target else "%" if "%" in target else "ms" if "ms" in target else "x"
    return parse_bound(target, unit) is not None


def test_headroom_reads_the_target_and_warns_under_20_percent():
    from harness.result import parse_bound, with_headroom

    p95 = CheckResult("load.x.p95", "p95", Stage.LOAD, Status.PASS, target="p95<3s", value=2630.0, unit="ms")
    assert parse_bound(p95.target, p95.unit).limit == 3000.0 and round(p95.ratio, 2) == 0.88
    assert with_headroom(p95).status is Status.WARN and "12 % headroom" in p95.detail
    rps = CheckResult("load.x.rps", "rps", Stage.LOAD, Status.PASS, target="rps>1", value=1.1, unit="req/s")
    assert round(rps.headroom, 2) == 0.09 and with_headroom(rps).status is Status.WARN  # 1 of 1.1: 9 % left
    roomy = CheckResult("health.x", "ready", Stage.HEALTH, Status.PASS, target="< 5000 ms", value=61.0, unit="ms")
    assert with_headroom(roomy).status is Status.PASS and roomy.ratio == pytest.approx(0.0122)
    disk = CheckResult("env.disk", "disk", Stage.ENVIRONMENT, Status.PASS, target=">= 5 GB", value=40.2, unit="GB")
    assert with_headroom(disk).status is Status.PASS and disk.headroom == pytest.approx(1 - 5 / 40.2)
    for target in ("engine >= 20.10, compose >= 2.0", "server count = client count", "p95<3000%",
                   "2 x 384 dims, unit length, 0.5 < cosine < 0.999"):  # the last bounds the cosine, not the time
        assert parse_bound(target, "ms") is None  # two bounds, none, or a unit that is not the value's
    for target in ("p95<3000ms", "ttft_p95<3000ms", "tps_p50>2", "fail_ratio<0.03", ">= 5 GB",
                   "outside the stack < 20 % of the CPU"):
        assert _bound_read(target), target
    failed = CheckResult("x", "x", Stage.LOAD, Status.FAIL, target="p95<3s", value=3100.0, unit="ms")
    assert with_headroom(failed).status is Status.FAIL  # only a pass is turned into a warning

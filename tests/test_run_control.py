"""Run control without kernels: the run lock, redaction, typed results, verdicts over planned runbooks,
history (list / diff directions), JUnit, and a manual run directory that cannot say GO by accident."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import history, junit
from harness import params as params_mod
from harness.lock import RunLock, RunLocked, lock_files
from harness.notebook import Runbook
from harness.redact import MASK, Redactor, is_secret, redact_parameters
from harness.result import CheckResult, Stage, Status, save_results
from harness.rundir import RunDir
from harness.sequence import default_sequence, run_meta
from harness.verdict import verdict_of
from suite.settings import Settings
from suite.testing import free_port_offset

ROOT = Path(__file__).parents[1]


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", port_offset=free_port_offset())


def test_the_lock_refuses_a_second_holder_and_names_it(settings):
    with RunLock(settings, "first"):
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}, run first") as info:
            RunLock(settings, "second").acquire()
        assert info.value.holder["run_id"] == "first"
    with RunLock(settings, "third") as lock:  # released: free again, and nothing stale
        assert not lock.recovered


def test_a_lock_left_by_a_dead_process_is_recovered(settings):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    path = next(iter(lock_files(settings).values()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "run_id": "killed-run"}))
    with RunLock(settings, "next") as lock:
        assert any(f"pid {pid} (run killed-run) is gone" in r for r in lock.recovered)


def test_same_ports_other_data_dir_is_still_locked(settings, tmp_path):
    other = settings.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    with RunLock(settings, "first"):
        with pytest.raises(RunLocked, match=r"\(port \d+\): pid"):
            RunLock(other, "second").acquire()


@pytest.mark.parametrize("name", ["api_key", "token", "hf_token", "admin_password", "secret", "client_secret",
                                  "db_password", "LOAD_API_KEY", "auth_token", "access_token", "db_pass",
                                  "db_passwd", "apiKey", "authToken", "apikey", "credentials", "aws_secret_key"])
def test_names_of_secrets_are_secret(name):
    assert is_secret(name)


@pytest.mark.parametrize("name", ["max_tokens", "tokens", "keep_last", "keys_dir", "maxTokens", "monkey",
                                  "pass_rate", "phase", "keep_days", "top_k"])
def test_names_that_only_contain_a_secret_word_are_not_secret(name):
    """Whole name parts only: 05_load's `max_tokens` was redacted from the run as if it were a token."""
    assert not is_secret(name)
    assert is_secret(name, "the value (secret)")  # marked in its comment: secret whatever its name


def test_max_tokens_of_the_load_runbook_is_not_secret():
    from harness.params import declared_parameters

    params = declared_parameters(ROOT / "runbooks" / "05_load.ipynb")
    assert not params["max_tokens"].secret


def test_secret_names_and_redaction():
    assert is_secret("db_password") and is_secret("LOAD_API_KEY") and is_secret("token")
    assert is_secret("note", "the vault login (secret)") and not is_secret("phase", "1, 2 or 3")
    r = Redactor(['p"w\\d-ü-1234', "abc"])  # too short values are masked by name only
    assert r.text('x p"w\\d-ü-1234 y') == f"x {MASK} y"
    assert r.text(json.dumps({"v": 'p"w\\d-ü-1234'})) == json.dumps({"v": MASK})
    assert r.text(json.dumps({"v": 'p"w\\d-ü-1234'}, ensure_ascii=False)) == json.dumps({"v": MASK})
    assert r.text("abc") == "abc"
    assert redact_parameters({"db_password": "abc", "phase": 3}, {"db_password"}) == {"db_password": MASK,
                                                                                      "phase": 3}


def test_typed_measurements_and_old_text_measurements():
    r = CheckResult("x", "X", Stage.LOAD, Status.PASS, value=1234.5678, unit="ms")
    assert r.measured == "1234.6 ms"
    old = CheckResult.from_dict({"id": "h", "title": "H", "phase": "health", "status": "pass", "measured": "12.5 ms"})
    assert (old.value, old.unit, old.stage) == (12.5, "ms", Stage.HEALTH)
    text = CheckResult("v", "V", Stage.ENVIRONMENT, Status.PASS, measured="3.11.2")
    assert text.value is None and text.measured == "3.11.2"
    info = CheckResult("t", "T", Stage.LOAD, Status.INFO, value=0.25, unit="ratio")
    assert info.ok and not info.is_gate and info.measured == "0.2500"


def _fake_run(runs: Path, run_id: str, started: str, results: list[CheckResult], steps: list[str] | None = None,
              profile: str = "seed") -> Path:
    run = RunDir.create(runs, run_id)
    meta = run_meta(run, default_sequence(), {}, profile=profile)
    meta.update(started_at=started, finished_at=started)
    run.write_json(run.meta_file, meta)
    notebooks = steps if steps is not None else [p["notebook"] for p in meta["runbooks"]]
    run.write_json(run.steps_file, [{"notebook": n, "status": "pass"} for n in notebooks])
    save_results(results, run.results / "05_load.json")
    return run.path


def _p95(value: float, status: Status = Status.PASS) -> CheckResult:
    return CheckResult("load.seed-100x5.p95", "p95", Stage.LOAD, status, target="p95<3000ms", value=value, unit="ms")


def _rps(value: float) -> CheckResult:
    return CheckResult("load.seed-100x5.run", "run", Stage.LOAD, Status.PASS, value=value, unit="req/s")


def test_diff_directions_and_previous_run(tmp_path):
    runs = tmp_path / "runs"
    a = _fake_run(runs, "a", "2026-01-01T10:00:00+00:00", [_p95(1200), _rps(4.0)])
    _fake_run(runs, "quick", "2026-01-01T10:30:00+00:00", [_p95(900), _rps(5.0)], profile="quick")
    b = _fake_run(runs, "b", "2026-01-01T11:00:00+00:00", [_p95(3100, Status.FAIL), _rps(5.0)])
    change = history.diff(a, b)
    deltas = {d.id: d for d in change.deltas}
    assert deltas["load.seed-100x5.p95"].better is False and deltas["load.seed-100x5.run"].better is True
    c = _fake_run(runs, "c", "2026-01-01T12:00:00+00:00", [_p95(3300, Status.FAIL), _rps(5.2)])
    quiet = history.diff(b, c)  # +6 % and +4 %: run-to-run noise, judged neither way
    assert [d.better for d in quiet.deltas] == [None, None]
    assert any(line.startswith("2 measurement(s) within their noise") for line in quiet.lines())
    assert [d.better for d in history.diff(b, c, noise_pct=0).deltas] == [False, True]
    assert change.status_changes == [("load.seed-100x5.p95", Status.PASS, Status.FAIL)]
    assert change.verdicts == ("GO", "NO-GO")
    assert history.previous_run(b).run_id == "a"  # not the quick-profile run between them
    assert history.previous_run(a) is None
    assert [s.run_id for s in history.list_runs(runs)] == ["a", "quick", "b", "c"]
    assert "p95 1200.0 ms" in history.list_runs(runs)[0].line().replace("seed-100x5 ", "")


def _probe(value: float) -> CheckResult:
    return CheckResult("health.inference-chat.ready", "ready", Stage.HEALTH, Status.PASS, target="< 5000 ms",
                       value=value, unit="ms")


def test_changes_are_called_only_beyond_their_own_noise(tmp_path):
    """The issue's case: a GO run after a NO-GO one listed health.inference-chat.ready 100 -> 61 ms
    "better". A one-shot probe is within noise until earlier runs show its spread; a load percentile
    is called only when the two runs' 95 % intervals do not overlap."""
    runs = tmp_path / "runs"

    def p95(value, low, high):
        r = _p95(value)
        r.interval = [low, high]
        return r

    a = _fake_run(runs, "a", "2026-01-01T10:00:00+00:00", [_probe(100), p95(1450, 1300, 1700)])
    b = _fake_run(runs, "b", "2026-01-01T11:00:00+00:00", [_probe(61), p95(1900, 1600, 2300)])
    deltas = {d.id: d for d in history.diff(a, b).deltas}
    probe, load = deltas["health.inference-chat.ready"], deltas["load.seed-100x5.p95"]
    assert probe.better is None and "too few to know its spread" in probe.noise  # -39 %, one earlier run
    assert load.better is None and load.noise == "95 % intervals overlap"  # +31 %, intervals overlap
    c = _fake_run(runs, "c", "2026-01-01T12:00:00+00:00", [_probe(80), p95(2900, 2500, 3400)])
    assert {d.id: d for d in history.diff(b, c).deltas}["load.seed-100x5.p95"].better is False  # apart
    # a probe's spread from earlier runs: 100, 61, 80 -> 61..100 (39 wide); 120 is within it, 190 is far
    d = _fake_run(runs, "d", "2026-01-01T13:00:00+00:00", [_probe(120)])
    assert {x.id: x for x in history.diff(c, d).deltas}["health.inference-chat.ready"].better is None
    e = _fake_run(runs, "e", "2026-01-01T14:00:00+00:00", [_probe(190)])
    far = {x.id: x for x in history.diff(d, e).deltas}["health.inference-chat.ready"]
    assert far.better is False and far.noise.startswith("one-shot; 4 earlier runs 61.0 ms – 120.0 ms")
    assert "worse (one-shot; 4 earlier runs" in far.text()


def test_a_run_missing_a_required_runbook_is_no_go_and_junit_says_so(tmp_path):
    run = _fake_run(tmp_path / "runs", "partial", "2026-01-01T10:00:00+00:00", [_p95(1000)],
                    steps=["00_validate_env.ipynb", "05_load.ipynb"])
    verdict = verdict_of(run)
    assert not verdict.go
    assert "runbook 01_bring_up not-run" not in verdict.reasons  # the label reads "not run"
    assert any(r == "runbook 01_bring_up not run" for r in verdict.reasons)
    assert not any("09_report" in r for r in verdict.reasons)  # the report step judges, it is not judged
    tree = junit.build(run).getroot()
    errors = tree.findall("./testsuite[@name='runbooks']/testcase/error")
    assert {e.get("message") for e in errors} >= {"runbook 01_bring_up not run", "runbook 03_smoke not run"}
    assert len(tree.findall("./testsuite[@name='05_load']/testcase")) == 1
    ET.fromstring(ET.tostring(tree))  # well-formed


def test_a_folder_harness_run_did_not_make_is_a_manual_run_that_records_its_own_steps(tmp_path):
    rb = Runbook.open(str(tmp_path / "by-hand"), "00_validate_env")  # a folder harness run did not make
    assert rb.manual
    meta = json.loads(rb.run.meta_file.read_text())
    assert meta["manual"] and "01_bring_up.ipynb" in [p["notebook"] for p in meta["runbooks"]]
    rb.record(CheckResult("env.python", "Python", Stage.ENVIRONMENT, Status.PASS))
    rb.gate()
    assert json.loads(rb.run.steps_file.read_text()) == [
        {"notebook": "00_validate_env.ipynb", "started_at": rb.run.read_json(rb.run.steps_file)[0]["started_at"],
         "status": "pass", "error": ""}]
    verdict = verdict_of(rb.run.path)  # what 09_report would say now: only 00 ran
    assert not verdict.go and "runbook 02_health not run" in verdict.reasons


def test_the_shipped_sequence_marks_its_report_and_bring_up_steps():
    from harness.sequence import load_sequence

    seq = load_sequence()
    assert [s.notebook for s in seq.steps if s.report] == ["09_report.ipynb"]
    assert [s.notebook for s in seq.steps if s.brings_up] == ["01_bring_up.ipynb"]
    assert [s.notebook for s in seq.steps if not s.required] == ["05b_capacity.ipynb"]  # opt-in: -p capacity=true
    assert seq.parameter("profile", {}) == "seed" and seq.parameter("profile", {"profile": "quick"}) == "quick"


def test_pipeline_profiles_are_checked_and_quick_trims_by_name():
    from harness import profiles
    from harness.load.scenarios import PROFILES as LOAD_PROFILES

    assert profiles.check("quick") is True and profiles.check("seed") is False
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        profiles.check("fast")
    assert set(profiles.PROFILES) == set(LOAD_PROFILES)  # every pipeline profile has its load plan
    seed, quick = profiles.policy("seed"), profiles.policy("quick")
    assert (seed.scans, seed.alert_drill, seed.drill) == (None, None, None)  # the release pipeline: all of it
    assert quick.drill == ("inference-chat",) and "scripts/test.sh" in quick.scans and quick.alert_drill
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.policy("fast")
    for nb in ("04_security.ipynb", "06_fault_drill.ipynb", "08_monitoring.ipynb"):  # they read the policy
        source = (default_sequence().parent / nb).read_text()
        assert "profiles.policy(profile)" in source and "profiles.check(" not in source, nb
    declared = {nb: params_mod.declared_parameters(default_sequence().parent / nb)
                for nb in ("04_security.ipynb", "05_load.ipynb", "06_fault_drill.ipynb", "06b_durability.ipynb",
                           "08_monitoring.ipynb")}
    assert all(p["profile"].default_value() == "seed" for p in declared.values())

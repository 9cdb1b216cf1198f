"""Waivers: what a waiver file must say (check, justification, owner, expiry; never a whole stage), how a
waived failure is judged and shown (WAIVED, GO), and that an expired waiver is a failure — through
`harness run` on a tiny sequence of real notebooks."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import date

import pytest

from harness import waivers
from harness.result import CheckResult, Stage, Status
from tests import test_sequence as tiny
from tests.test_sequence import _env, run, runs

sequence = tiny.sequence  # the fixture: a tiny sequence of real notebooks (two checks each), no stack

GOOD = '''[[waiver]]
check = "{check}"
justification = "{why}"
owner = "rm@example.org"
expires = {expires}
'''


def waiver_file(tmp_path, check="b.check", why="b is known to fail on staging", expires="2099-12-31"):
    path = tmp_path / "waivers.toml"
    path.write_text(GOOD.format(check=check, why=why, expires=expires))
    return path


@pytest.mark.parametrize("pattern", ["load.*", "load*", "*", "*.p95", "env.*.*", "load", "env.[a-z]*", "?nv.ports"])
def test_a_pattern_that_waives_a_whole_stage_is_refused(pattern):
    with pytest.raises(waivers.WaiverError, match="whole stage"):
        waivers.parse(GOOD.format(check=pattern, why="x", expires="2099-01-01"))


@pytest.mark.parametrize("pattern", ["env.gpu", "env.gpu*", "load.*.p95", "load.seed-100x5.p95", "security.scan.pip_audit"])
def test_a_pattern_naming_checks_is_accepted(pattern):
    [w] = waivers.parse(GOOD.format(check=pattern, why="x", expires="2099-01-01"))
    assert w.check == pattern and w.expires == date(2099, 1, 1)


@pytest.mark.parametrize(("text", "says"), [
    ('[[waiver]]\ncheck = "env.gpu"\njustification = "x"\nowner = "me"\n', "no expiry"),
    ('[[waiver]]\ncheck = "env.gpu"\njustification = "x"\nowner = "me"\nexpiry = 2099-01-01\n', "unknown key(s) expiry"),
    ('[[waiver]]\ncheck = "env.gpu"\njustification = ""\nowner = "me"\nexpires = 2099-01-01\n', "no justification"),
    ('[[waiver]]\ncheck = "env.gpu"\njustification = "x"\nexpires = 2099-01-01\n', "no owner"),
    ('[[waiver]]\ncheck = "env.gpu"\njustification = "x"\nowner = "me"\nexpires = "soon"\n', "not a date"),
    ('[waiver]\ncheck = "env.gpu"\n', "array of tables"),
    ("check = 'env.gpu'\n", "unknown top-level key"),
    ("[[waiver]\n", "not valid TOML"),
])
def test_an_incomplete_waiver_is_refused_saying_what_is_missing(text, says):
    with pytest.raises(waivers.WaiverError) as caught:
        waivers.parse(text)
    assert says in str(caught.value)


def _r(cid: str, status: Status, stage: Stage = Stage.SMOKE) -> CheckResult:
    return CheckResult(cid, cid, stage, status, target="t", measured="m")


def test_judgement_expiry_first_match_and_a_waiver_that_covers_a_whole_stage_in_practice():
    ws = waivers.parse(GOOD.format(check="smoke.a", why="one", expires="2026-06-30")
                       + GOOD.format(check="smoke.a*", why="two", expires="2026-12-31")
                       + GOOD.format(check="env.p*", why="three", expires="2026-12-31"))
    results = [_r("smoke.a", Status.FAIL), _r("smoke.ab", Status.WARN), _r("smoke.c", Status.PASS),
               _r("env.python", Status.FAIL, Stage.ENVIRONMENT), _r("env.ports", Status.PASS, Stage.ENVIRONMENT)]
    on_time = waivers.judge(ws, results, date(2026, 6, 30))  # the expiry day itself is still in force
    assert on_time.waiver_for(results[0]).index == 1 and on_time.waiver_for(results[1]).index == 2
    assert on_time.waiver_for(results[2]) is None  # a pass is never "waived"
    # env.p* happens to match every gate of the environment stage here: not applied, and a problem
    assert not on_time.waived(results[3]) and [a.waiver.index for a in on_time.refused] == [3]
    later = waivers.judge(ws, results, date(2026, 7, 1))
    assert later.waiver_for(results[0]).index == 2  # the expired first waiver no longer wins it
    assert [a.waiver.index for a in later.expired] == [1]
    texts = [text for text, _ in later.problems()]
    assert any("waiver 1 `smoke.a`" in t and "expired on 2026-06-30" in t for t in texts)
    assert any("every gate of stage environment" in t for t in texts)


@pytest.mark.integration
def test_harness_run_refuses_a_whole_stage_waiver_or_one_without_expiry_before_anything_starts(tmp_path, sequence):
    path = waiver_file(tmp_path, check="smoke.*")
    refused = run(tmp_path, sequence, "--waivers", str(path))
    assert refused.returncode == 2 and "waives a whole stage" in refused.stderr
    path.write_text('[[waiver]]\ncheck = "b.check"\njustification = "x"\nowner = "me"\n')
    endless = run(tmp_path, sequence, "--waivers", str(path))
    assert endless.returncode == 2 and "no expiry" in endless.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.mark.integration
def test_a_waived_failure_is_go_and_shown_as_waived_with_its_measure_and_reason(tmp_path, sequence):
    env = _env(tmp_path)
    path = waiver_file(tmp_path)
    done = run(tmp_path, sequence, "-p", f"need_file={tmp_path / 'never'}", "--waivers", str(path),
               "--junit", str(tmp_path / "j.xml"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: GO" in done.stdout and "waived by waiver 1 `b.check`" in done.stdout
    [run_dir] = runs(tmp_path)
    steps = {s["notebook"]: s["status"] for s in json.loads((run_dir / "steps.json").read_text())}
    assert steps["b.ipynb"] == "pass"  # its gate did not stop the run
    assert json.loads((run_dir / "results" / "b.json").read_text())[0]["status"] == "fail"  # kept as measured
    assert (run_dir / "waivers.toml").read_bytes() == path.read_bytes()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["waivers"]["count"] == 1 and meta["waivers"]["source"] == str(path.resolve())
    report = (run_dir / "report.html").read_text()
    top = report[:report.index("</section>")]  # the first screen
    assert "WAIVED" in top and "b is known to fail on staging" in top and "rm@example.org" in top
    assert "b.check" in top and "10.0 ms" in top  # the measured value beside the waiver
    assert "WAIVED (FAIL as measured: 10.0 ms)" in report  # in its gates row
    case = ET.parse(tmp_path / "j.xml").getroot().find(".//testcase[@name='b.check']")
    skipped = case.find("skipped")
    assert skipped is not None and skipped.get("type") == "waived" and "b is known to fail" in skipped.get("message")
    assert case.find("failure") is None


@pytest.mark.integration
def test_an_expired_waiver_is_no_go_naming_it(tmp_path, sequence):
    env = _env(tmp_path)
    path = waiver_file(tmp_path, expires="2020-01-31")
    done = run(tmp_path, sequence, "--waivers", str(path), "--junit", str(tmp_path / "j.xml"), env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "EXPIRED on 2020-01-31" in done.stdout  # said as the run starts
    assert "verdict: NO-GO" in done.stdout
    assert "waiver 1 `b.check` (owner rm@example.org, expires 2020-01-31) expired on 2020-01-31" in done.stdout
    assert "next: Renew the waiver" in done.stdout
    [run_dir] = runs(tmp_path)
    report = (run_dir / "report.html").read_text()
    assert "EXPIRED" in report and "expired on 2020-01-31" in report
    suite = ET.parse(tmp_path / "j.xml").getroot().find("./testsuite[@name='waivers']")
    assert suite is not None and "expired on 2020-01-31" in suite.find(".//failure").get("message")

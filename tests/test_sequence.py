"""`harness run` / `resume` / `list` / `diff` on a tiny sequence of real notebooks (real kernels, no stack):
resume after a failure and after a kill, the run lock, secret parameters, JUnit, exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from suite.testing import free_port_offset

SECRET = "hunter2-Sekr3t-value"

CHECK = '''\
import time
from pathlib import Path

from harness.notebook import Runbook
from harness.result import CheckResult, Stage, Status

rb = Runbook.open(run_dir, "{name}")
Path(run_dir, "{name}.count").open("a").write("ran\\n")
print("careless runbook prints the password:", db_password)
marker = Path(run_dir, "{name}.slept")
if sleep_s and not marker.exists():  # only the first execution sleeps (a step that gets killed)
    marker.touch()
    rb.say("{name}: sleeping")
    time.sleep(sleep_s)
ok = not need_file or Path(need_file).exists()
rb.record(CheckResult("{name}.check", "{name} works", Stage.SMOKE, Status.PASS if ok else Status.FAIL,
                      target="{name}_value < 100 ms", value={name}_value, unit="ms",
                      detail=f"password {{db_password}} used"))
rb.record(CheckResult("{name}.warning", "{name} warns", Stage.SMOKE, Status.WARN if warn else Status.PASS))
rb.gate()
'''

REPORT = '''\
from harness.notebook import Runbook
from harness.report import write_report

rb = Runbook.open(run_dir, "z_report")
print(write_report(rb.run.path))
'''


def _notebook(path: Path, parameters: str, source: str) -> None:
    params = new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def sequence(tmp_path) -> Path:
    folder = tmp_path / "book"
    folder.mkdir()
    for name, extra in (("a", ""), ("b", 'need_file: str = ""  # this runbook fails until the file exists\n'
                                         "sleep_s: float = 0.0\n")):
        params = (f'run_dir: str = ""\nrun_id: str = ""\ndb_password: str = ""\n{name}_value: float = 10.0\n'
                  f"warn: bool = False\n{extra}")
        source = CHECK.format(name=name)
        if name == "a":
            source = 'need_file = ""\nsleep_s = 0.0\n' + source
        _notebook(folder / f"{name}.ipynb", params, source)
    _notebook(folder / "z_report.ipynb", 'run_dir: str = ""\nrun_id: str = ""', REPORT)
    (folder / "sequence.yaml").write_text(
        "name: tiny\nrunbooks:\n  - a.ipynb\n  - b.ipynb\n  - notebook: z_report.ipynb\n    report: true\n")
    return folder / "sequence.yaml"


def _env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, SUITE_DATA_DIR=str(tmp_path / "data"), SUITE_PORT_OFFSET=str(free_port_offset()))


def harness(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 240):
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env=env or _env(tmp_path), timeout=timeout)


def run(tmp_path, sequence, *args, env=None):
    return harness(tmp_path, "run", str(sequence), "--runs-dir", str(tmp_path / "runs"), *args, env=env)


def runs(tmp_path) -> list[Path]:
    return sorted((tmp_path / "runs").iterdir())


@pytest.mark.integration
def test_a_failed_run_resumes_from_the_failed_runbook_and_junit_has_one_case_per_check(tmp_path, sequence):
    flag = tmp_path / "fixed"
    env = _env(tmp_path)
    first = run(tmp_path, sequence, "-p", f"need_file={flag}", "--junit", str(tmp_path / "j1.xml"), env=env)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "verdict: NO-GO" in first.stdout and "without encryption" not in first.stderr
    [run_dir] = runs(tmp_path)
    steps = {s["notebook"]: s["status"] for s in json.loads((run_dir / "steps.json").read_text())}
    assert steps == {"a.ipynb": "pass", "b.ipynb": "fail", "z_report.ipynb": "pass"}
    suites = ET.parse(tmp_path / "j1.xml").getroot()
    cases = suites.findall("./testsuite/testcase")
    assert len(cases) == 4  # two checks per runbook, nothing else: b's failure is a failed check
    failure = suites.find("./testsuite[@name='b']/testcase[@name='b.check']/failure")
    assert failure is not None and "target b_value < 100 ms, measured 10.0 ms" in failure.get("message")

    flag.touch()
    second = harness(tmp_path, "resume", run_dir.name, "--runs-dir", str(tmp_path / "runs"),
                     "--junit", str(tmp_path / "j2.xml"), env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming run" in second.stdout and "keeping a.ipynb" in second.stdout
    assert "verdict: GO" in second.stdout
    assert (run_dir / "a.count").read_text().count("ran") == 1  # passed: not run again
    assert (run_dir / "b.count").read_text().count("ran") == 2
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["resumed"][0]["from"] == "b.ipynb" and meta["finished_at"]
    assert ">GO<" in (run_dir / "report.html").read_text()
    assert not ET.parse(tmp_path / "j2.xml").getroot().findall(".//failure")
    for page in (run_dir / "notebooks").glob("*.html"):  # reviewers' renderings load nothing from a CDN
        assert not re.search(r'(src|href)="(https?:)?//', page.read_text()), page


@pytest.mark.integration
def test_resume_starts_a_torn_down_stack_again_through_the_bring_up_step_only(tmp_path, sequence):
    text = sequence.read_text().replace("  - a.ipynb\n", "  - notebook: a.ipynb\n    brings_up: true\n")
    sequence.write_text(text)  # `a` plays 01_bring_up; `suite status` finds nothing of this stack up
    env, flag = _env(tmp_path), tmp_path / "fixed"
    assert run(tmp_path, sequence, "-p", f"need_file={flag}", env=env).returncode == 1
    flag.touch()
    [run_dir] = runs(tmp_path)
    resumed = harness(tmp_path, "resume", str(run_dir), env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "not up" in resumed.stdout and "re-running a.ipynb" in resumed.stdout
    assert (run_dir / "a.count").read_text().count("ran") == 2 and (run_dir / "b.count").read_text().count("ran") == 2
    assert json.loads((run_dir / "run.json").read_text())["resumed"][0] == {
        "at": json.loads((run_dir / "run.json").read_text())["resumed"][0]["at"], "from": "b.ipynb", "again": ["a.ipynb"]}


@pytest.mark.integration
def test_a_second_run_is_refused_naming_the_holder_and_a_killed_run_resumes(tmp_path, sequence):
    env = _env(tmp_path)
    holder = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(sequence), "--runs-dir",
                               str(tmp_path / "runs"), "-p", "sleep_s=60"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        steps_file = None
        while time.monotonic() < deadline:
            found = list((tmp_path / "runs").glob("*/b.slept"))
            if found:
                steps_file = found[0].parent / "steps.json"
                break
            time.sleep(0.3)
        assert steps_file is not None, "the first run never reached its slow runbook"
        refused = run(tmp_path, sequence, env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"pid {holder.pid}" in refused.stderr and "another harness run holds this stack" in refused.stderr
        assert len(runs(tmp_path)) == 1  # the refused run left nothing behind
    finally:
        holder.send_signal(signal.SIGKILL)  # killed in the middle of runbook b, no cleanup at all
        holder.wait(30)
    run_dir = steps_file.parent
    assert json.loads(steps_file.read_text())[1]["status"] == "running"
    resumed = harness(tmp_path, "resume", str(run_dir), env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "recovered a stale run lock" in resumed.stdout and f"pid {holder.pid}" in resumed.stdout
    assert (run_dir / "a.count").read_text().count("ran") == 1
    statuses = [s["status"] for s in json.loads(steps_file.read_text())]
    assert statuses == ["pass", "pass", "pass"]


@pytest.mark.integration
def test_a_secret_parameter_appears_nowhere_under_the_run(tmp_path, sequence):
    env = _env(tmp_path)
    proc = run(tmp_path, sequence, "-p", f"db_password={SECRET}", "-p", "warn=true", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run_dir] = runs(tmp_path)
    leaks = [p for p in run_dir.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert not leaks
    assert SECRET not in proc.stdout + proc.stderr
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["parameters"]["db_password"] == "[redacted]" and meta["secret_parameters"] == ["db_password"]
    executed = (run_dir / "notebooks" / "a.ipynb").read_text()
    assert "[redacted]" in executed  # the injected cell, papermill's metadata and the printed output
    assert "password [redacted] used" in (run_dir / "results" / "a.json").read_text()
    # a resume needs the secret again: it was never stored
    again = harness(tmp_path, "resume", str(run_dir), env=env)
    assert again.returncode == 2 and "db_password" in again.stderr


@pytest.mark.integration
def test_list_diff_and_since_last_run(tmp_path, sequence):
    env = _env(tmp_path)
    assert run(tmp_path, sequence, "-p", "a_value=10", env=env).returncode == 0
    time.sleep(1.1)  # run ids and start times are per second
    assert run(tmp_path, sequence, "-p", "a_value=25", "-p", "warn=true", env=env).returncode == 0
    first, second = runs(tmp_path)
    listed = harness(tmp_path, "list", "--runs-dir", str(tmp_path / "runs"), env=env)
    assert listed.returncode == 0 and first.name in listed.stdout and second.name in listed.stdout
    assert listed.stdout.count(" GO ") == 2
    diff = harness(tmp_path, "diff", first.name, second.name, "--runs-dir", str(tmp_path / "runs"), env=env)
    # a one-shot latency with one earlier run: its spread is unknown, so +150 % is not called worse
    assert "a.check" not in diff.stdout.split("new warnings:")[0] and "within their noise" in diff.stdout
    assert "new warnings:" in diff.stdout and "a.warning" in diff.stdout
    assert "gates that changed status:" in diff.stdout and "a.warning: PASS -> WARN" in diff.stdout
    every = harness(tmp_path, "diff", first.name, second.name, "--all", "--runs-dir", str(tmp_path / "runs"), env=env)
    assert ("a.check: 10.0 ms -> 25.0 ms (+150.0 %) within noise (one-shot, 1 earlier run(s): too few to know "
            "its spread)") in every.stdout
    report = (second / "report.html").read_text()
    since = report[report.index('id="since-last-run"'):report.index("<h2>Runbooks")]
    assert first.name in since and "a.warning" in since and "within their noise" in since
    assert "No earlier finished run" in (first / "report.html").read_text()

"""Runbooks run by hand: one session is one run (``harness.manual``), parameters from the kernel's
environment, the gate's sentence, and the ``harness manual`` command. The kernel test runs two small
notebooks the way nbmake and JupyterLab do (nbclient, no papermill, no ``run_dir``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from harness import manual
from harness.errors import ParameterError
from harness.notebook import GateSummary, Runbook
from harness.params import from_environment
from harness.result import CheckResult, Stage, Status
from harness.verdict import verdict_of

HOUR = 3600.0


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    """A runs folder the by-hand runbooks of this test use, and no session named by the environment."""
    root = tmp_path / "runs"
    monkeypatch.setattr(manual, "default_runs_dir", lambda: root)
    for name in (manual.RUN_DIR_ENV, manual.HOURS_ENV):
        monkeypatch.delenv(name, raising=False)
    return root


def _age(run: Path, seconds: float) -> None:
    """Make every file of ``run`` look last touched ``seconds`` ago."""
    then = time.time() - seconds
    for f in run.rglob("*"):
        os.utime(f, (then, then))


def test_runbooks_opened_by_hand_one_after_another_share_one_run_that_can_say_go(runs):
    first = Runbook.open("", "00_validate_env")
    assert first.manual and first.run.path.parent == runs.resolve() and first.run.run_id.startswith("manual-")
    first.record(CheckResult("env.python", "Python", Stage.ENVIRONMENT, Status.PASS))
    first.gate()
    # a kernel restart, another notebook: the same run
    again = Runbook.open("", "02_health")
    assert again.run.path == first.run.path
    again.record(CheckResult("health.gateway.ready", "ready", Stage.HEALTH, Status.PASS))
    again.gate()
    steps = {s["notebook"]: s["status"] for s in json.loads(first.run.steps_file.read_text())}
    assert steps == {"00_validate_env.ipynb": "pass", "02_health.ipynb": "pass"}
    reasons = verdict_of(first.run.path).reasons  # the rest of the sequence is what is missing
    assert "runbook 01_bring_up not run" in reasons and not any("00_validate_env" in r for r in reasons)
    assert not any("02_health" in r for r in reasons)
    assert len([p for p in runs.iterdir() if p.is_dir()]) == 1
    report = Runbook.open("", "09_report")  # records no checks: done() ends its step
    assert json.loads(first.run.steps_file.read_text())[-1]["status"] == "running"
    report.done()
    assert json.loads(first.run.steps_file.read_text())[-1] == {
        "notebook": "09_report.ipynb", "started_at": json.loads(first.run.steps_file.read_text())[-1]["started_at"],
        "status": "pass", "error": ""}


def test_a_runbook_run_again_by_hand_replaces_what_it_recorded(runs):
    rb = Runbook.open("", "05_load")
    rb.record(CheckResult("load.code.p95", "code p95", Stage.LOAD, Status.PASS, value=900.0, unit="ms"))
    rb.gate()
    manual.update_step(rb.run, "05_load.ipynb", output="notebooks/05_load.ipynb", html="notebooks/05_load.html")
    again = Runbook.open("", "05_load")  # and its kernel dies before it records anything
    assert not again.results_file.exists()
    step = json.loads(rb.run.steps_file.read_text())[0]
    assert step["status"] == "running" and "html" not in step and "output" not in step
    assert "runbook 05_load running" in verdict_of(rb.run.path).reasons  # not the earlier attempt's PASS


def test_which_run_by_hand_environment_then_pointer_then_newest_recent_then_new(runs, monkeypatch):
    assert manual.choose().new  # nothing yet: a new one, created only when a runbook opens it
    assert not runs.exists()

    old = manual.open_run(runs / "manual-old").path
    _age(old, 9 * HOUR)  # idle longer than the 8 h window: not joined
    chosen = manual.choose()
    assert chosen.new and chosen.path != old and "8 h" in chosen.reason

    recent = manual.open_run(runs / "manual-recent").path
    _age(recent, 2 * HOUR)
    chosen = manual.choose()
    assert chosen.path == recent and not chosen.new and "2.0 h ago" in chosen.reason
    monkeypatch.setenv(manual.HOURS_ENV, "1")
    assert manual.choose().new  # a shorter window leaves it alone
    monkeypatch.delenv(manual.HOURS_ENV)

    harness_run = runs / "20260101-100000-abcd"  # a `harness run` directory is never joined by default
    harness_run.mkdir(parents=True)
    (harness_run / "run.json").write_text(json.dumps({"manual": False, "run_id": harness_run.name}))
    assert manual.choose().path == recent

    assert manual.start(runs, "release-1.4") == (runs / "release-1.4").resolve()
    chosen = manual.choose()
    assert chosen.path == (runs / "release-1.4").resolve() and "runs/current" in chosen.reason

    monkeypatch.setenv(manual.RUN_DIR_ENV, "by-env")  # a run id under runs/
    assert manual.choose().path == (runs / "by-env").resolve() and manual.choose().new
    monkeypatch.setenv(manual.RUN_DIR_ENV, str(runs.parent / "elsewhere"))  # a path
    assert manual.choose().path == (runs.parent / "elsewhere").resolve()
    monkeypatch.delenv(manual.RUN_DIR_ENV)

    assert manual.stop(runs) == (runs / "release-1.4").resolve()  # closes it and removes the pointer
    assert not manual.pointer_file(runs).exists()
    meta = json.loads((runs / "release-1.4" / "run.json").read_text())
    assert meta["closed_at"] and meta["finished_at"]
    assert manual.choose().path == recent  # the closed run is not joined again


def test_a_bad_window_or_run_name_is_refused(runs, monkeypatch):
    monkeypatch.setenv(manual.HOURS_ENV, "soon")
    with pytest.raises(ValueError, match="HARNESS_MANUAL_HOURS='soon' is not a number"):
        manual.choose()
    with pytest.raises(ValueError, match="not a run id"):
        manual.start(runs, "../outside")


def test_parameters_from_the_kernel_environment_are_typed_and_only_for_declared_names():
    namespace = {"__annotations__": {"profile": str, "users": int, "abort_on_fail": bool, "ratio": float,
                                     "names": list[str], "db_password": str, "run_dir": str},
                 "profile": "seed", "users": 0, "abort_on_fail": True, "ratio": 0.5, "names": [], "db_password": "",
                 "run_dir": ""}
    env = {"HARNESS_PARAM_PROFILE": "quick", "HARNESS_PARAM_USERS": "4", "HARNESS_PARAM_ABORT_ON_FAIL": "false",
           "HARNESS_PARAM_RATIO": "0.25", "HARNESS_PARAM_NAMES": "a, b", "HARNESS_PARAM_RUN_DIR": "/elsewhere",
           "HARNESS_PARAM_NOT_DECLARED": "x", "PROFILE": "ignored"}
    applied = from_environment(namespace, env, notebook="05_load.ipynb")
    assert applied == {"abort_on_fail": False, "names": ["a", "b"], "profile": "quick", "ratio": 0.25, "users": 4}
    assert namespace["users"] == 4 and namespace["run_dir"] == "" and "not_declared" not in namespace
    with pytest.raises(ParameterError, match="parameter 'users' of 05_load.ipynb expects int, got 'many'"):
        from_environment(namespace, {"HARNESS_PARAM_USERS": "many"}, notebook="05_load.ipynb")


def test_a_runbook_by_hand_applies_and_says_the_environment_parameters_but_harness_run_does_not(
        runs, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HARNESS_PARAM_PROFILE", "quick")
    monkeypatch.setenv("HARNESS_PARAM_DB_PASSWORD", "hunter2")
    namespace = {"__annotations__": {"profile": str, "db_password": str}, "profile": "seed", "db_password": ""}
    Runbook.open("", "05_load", namespace=namespace)
    out = capsys.readouterr().out
    assert namespace["profile"] == "quick" and "profile='quick'" in out
    assert "hunter2" not in out and "db_password=[redacted]" in out
    run = manual.open_run(tmp_path / "harness-run")  # a run directory `harness run` made
    run.write_json(run.meta_file, {**run.read_json(run.meta_file), "manual": False})
    namespace["profile"] = "seed"
    rb = Runbook.open(str(run.path), "05_load", namespace=namespace)
    assert not rb.manual and namespace["profile"] == "seed"  # -p is how a harness run gets parameters


def test_a_passed_gate_reads_as_a_sentence_and_still_compares_as_counts():
    gate = GateSummary("02_health", {"pass": 7, "fail": 0, "warn": 1, "skip": 2, "info": 0})
    assert str(gate) == repr(gate) == "02_health passed: 10 checks (7 pass, 1 warn, 2 skip), none failed."
    assert gate == {"pass": 7, "fail": 0, "warn": 1, "skip": 2, "info": 0}
    assert str(GateSummary("09_report", {"pass": 0})) == "09_report passed: no check was recorded."


@pytest.mark.integration
def test_harness_manual_command_starts_shows_and_stops_a_session(tmp_path):
    runs = tmp_path / "runs"
    env = {k: v for k, v in os.environ.items() if k not in (manual.RUN_DIR_ENV, manual.HOURS_ENV)}

    def harness(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "manual", *args, "--runs-dir", str(runs)],
                              capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert "a new run:" in harness("show")
    out = harness("start", "--name", "session-1")
    assert f"manual run: {(runs / 'session-1').resolve()}" in out
    assert (runs / "current").read_text().strip() == "session-1"
    assert "runs/current" in harness("show")
    assert "closed manual run" in harness("stop") and not (runs / "current").exists()
    assert "no manual run to close" in harness("stop")


def _notebook(path: Path, name: str, source: str) -> None:
    params = new_code_cell('run_dir: str = ""\nrun_id: str = ""\nprofile: str = "seed"')
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.integration
def test_two_notebooks_run_by_hand_in_their_own_kernels_write_one_run(tmp_path, monkeypatch):
    """nbmake's way (nbclient, the kernel inherits this process's environment)."""
    from nbclient import NotebookClient

    session = tmp_path / "runs" / "nb-session"
    monkeypatch.setenv(manual.RUN_DIR_ENV, str(session))
    monkeypatch.setenv("HARNESS_PARAM_PROFILE", "quick")
    for name in ("00_validate_env", "02_health"):
        path = tmp_path / f"{name}.ipynb"
        _notebook(path, name, f'''from harness.notebook import Runbook
from harness.result import CheckResult, Stage, Status
rb = Runbook.open(run_dir, "{name}")
rb.record(CheckResult("{name}.profile", "profile", Stage.ENVIRONMENT,
                      Status.PASS if profile == "quick" else Status.FAIL, measured=profile))
rb.gate()''')
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=120, kernel_name="python3").execute(cwd=str(tmp_path))
        text = "".join(o.get("text", "") for o in nb.cells[1].outputs)
        shown = "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[1].outputs)
        assert f"manual run: {session.resolve()}" in text and "profile='quick'" in text
        assert shown == f"{name} passed: 1 check (1 pass), none failed."
    steps = {s["notebook"]: s["status"] for s in json.loads((session / "steps.json").read_text())}
    assert steps == {"00_validate_env.ipynb": "pass", "02_health.ipynb": "pass"}
    assert sorted(p.name for p in (session / "results").iterdir()) == ["00_validate_env.json", "02_health.json"]

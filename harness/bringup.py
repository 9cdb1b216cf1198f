"""Bring the stack up through the ``suite`` CLI (a subprocess) and record what this run started."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from harness.result import CheckResult, now_iso
from suite import services

log = logging.getLogger(__name__)


def suite_command() -> list[str]:
    """The ``suite`` CLI of this interpreter (works from a kernel whose PATH lacks the venv)."""
    return [sys.executable, "-m", "suite.cli"]


def bring_up(phase: int, run_dir: Path | None = None, echo=None) -> list[CheckResult]:
    """``suite up --phase N``; one result for the phase and one per service (started or already up).

    ``echo`` receives each output line as it comes, so a notebook shows progress while models load.
    The names started by this call go to ``started_services.json`` for the teardown at the end of
    the run.
    """
    echo = echo or (lambda line: log.info("%s", line))
    started_at = now_iso()
    t0 = time.perf_counter()
    proc = subprocess.Popen([*suite_command(), "up", "--phase", str(phase), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        lines.append(line)
        if not line.startswith("{"):
            echo(line)
    code = proc.wait()
    took = round(time.perf_counter() - t0, 2)
    started: list[str] = []
    for line in reversed(lines):
        if line.startswith("{"):
            started = json.loads(line).get("started", [])
            break
    if run_dir is not None and started:
        path = Path(run_dir) / "started_services.json"
        path.write_text(json.dumps({"phase": phase, "services": started, "started_at": started_at}))
    names = [s.name for s in services.for_phase(phase)]
    results = [CheckResult(
        "bringup.phase", f"suite up --phase {phase}", "bring-up", "pass" if code == 0 else "fail",
        target=f"{len(names)} services ready", measured=f"exit {code} in {took:.1f}s",
        detail="\n".join(lines[-25:]) if code else f"started: {', '.join(started) or 'none (already up)'}",
        started_at=started_at, duration_s=took)]
    if code == 0:
        for name in names:
            how = "started by this run" if name in started else "already running"
            results.append(CheckResult(f"bringup.{name}", f"{name} up", "bring-up", "pass",
                                       target="ready", measured=how, started_at=started_at))
    return results


def tear_down(names: list[str] | None = None) -> int:
    """``suite down [names]``; returns the CLI's exit code."""
    return subprocess.run([*suite_command(), "down", *(names or [])], capture_output=True, text=True).returncode

"""Bring the stack up through the ``suite`` CLI (``harness.stack``) and record what this run started."""

from __future__ import annotations

import logging
import time

from harness import stack
from harness.result import CheckResult, Stage, Status, now_iso
from harness.rundir import RunDir
from suite import services
from suite.settings import Settings

log = logging.getLogger(__name__)


def bring_up(phase: int, run: RunDir | None = None, echo: stack.Echo | None = None,
             settings: Settings | None = None) -> list[CheckResult]:
    """``suite up --phase N``; one result for the phase and one per service (started or already up).

    ``echo`` receives each output line as it comes, so a notebook shows progress while models load.
    The names started by this call go to the run's ``started_services.json`` for the teardown at the
    end of the run.
    """
    echo = echo or (lambda line: log.info("%s", line))
    started_at = now_iso()
    t0 = time.perf_counter()
    outcome = stack.up(phase, settings, echo)
    took = round(time.perf_counter() - t0, 2)
    if run is not None and outcome.started:
        run.record_started(phase, outcome.started, started_at)
    names = [s.name for s in services.for_phase(phase)]
    ok = outcome.exit_code == 0
    results = [CheckResult(
        "bringup.phase", f"suite up --phase {phase}", Stage.BRING_UP, Status.PASS if ok else Status.FAIL,
        target=f"{len(names)} services ready", value=took, unit="s",
        measured=f"exit {outcome.exit_code} in {took:.1f} s",
        detail=f"started: {', '.join(outcome.started) or 'none (already up)'}" if ok
        else "\n".join(outcome.lines[-25:]),
        started_at=started_at, duration_s=took)]
    if ok:
        for name in names:
            how = "started by this run" if name in outcome.started else "already running"
            results.append(CheckResult(f"bringup.{name}", f"{name} up", Stage.BRING_UP, Status.PASS,
                                       target="ready", measured=how, started_at=started_at))
    return results


def not_started(target) -> list[CheckResult]:
    """The bring-up of a stack the run did not start (a target file): nothing to start, said so."""
    return [CheckResult.skipped("bringup.phase", f"bring up {target.name}", Stage.BRING_UP,
                                target="the target's parts running", measured="not applicable",
                                detail=f"not applicable: target {target.name} ({target.source}) is run by its "
                                       "owner; this run starts and stops nothing (its parts are reached below)")]


def stop_hint(run: RunDir, settings: Settings | None = None) -> str:
    """What a user who ran the bring-up by hand types to stop what it started."""
    started = run.started_services()
    if not started:
        return "This notebook started nothing: every service was already running."
    return (f"Started by this notebook: {', '.join(started)}. When you are done, stop them with:\n"
            f"  {stack.stop_command(started, settings)}")


def tear_down(names: list[str] | None = None, settings: Settings | None = None) -> int:
    """``suite down [names]``; returns the CLI's exit code."""
    return stack.down(names, settings)

"""What a runbook cell calls: open the run directory, record results, show them, gate on failures.

Under ``harness run`` the notebook gets the run's directory as a parameter. Opened by hand (empty
``run_dir``), each kernel session gets a run directory of its own, ``runs/manual-<kernel start>-<kernel
id>``, listed by ``harness list``: results of one session never mix with another's, and the runbook
records its own step state there, so a report written in that directory says "not run" for every
runbook the session did not run (and NO-GO when a required one is missing).

A runbook that needs the stack calls ``rb.needs_services(settings, phase)`` first: with a service of
its phase not answering it records one failed check and stops the notebook with one line (no
traceback: ``ServicesDown`` renders as its message in Jupyter and in papermill's error), so a runbook
run by hand never measures closed ports.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import psutil

from harness import waivers
from harness.errors import ChecksFailed, RunbookError
from harness.palette import WAIVED_COLOR, status_color
from harness.result import CheckResult, Stage, Status, now_iso, save_results, summarize, with_headroom
from harness.rundir import RunDir, default_runs_dir

log = logging.getLogger(__name__)


class ServicesDown(RunbookError):
    """A runbook's services do not answer: shown as its one line, without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook: what a notebook (and papermill) shows
        return [f"{type(self).__name__}: {self}"]


class Runbook:
    """One runbook's handle on the run: ``rb = Runbook.open(run_dir, "02_health")``."""

    def __init__(self, run: RunDir, name: str, manual: bool = False) -> None:
        self.run = run
        self.name = name
        self.manual = manual  # opened by hand, not by `harness run`
        self.results: list[CheckResult] = []

    @classmethod
    def open(cls, run_dir: str, name: str) -> Runbook:
        """Use the run directory ``harness run`` passed in; by hand (empty), this kernel session's own."""
        run = RunDir.create(Path(run_dir).resolve().parent, Path(run_dir).name) if run_dir else \
            RunDir.create(default_runs_dir(), kernel_session_run_id())
        meta = run.read_json(run.meta_file, default=None)
        if meta is None:  # a directory `harness run` did not make: a manual run
            from harness.sequence import default_sequence, run_meta

            meta = run_meta(run, default_sequence(), {}, manual=True)
            run.write_json(run.meta_file, meta)
        rb = cls(run, name, manual=bool(meta.get("manual")))
        if rb.manual:
            rb._set_step(Status.RUNNING)
            rb.say(f"manual run: {run.path}  (results of this kernel session go here; `harness list` lists it)")
        return rb

    def _set_step(self, status: Status, error: str = "") -> None:
        """A manual run keeps its own ``steps.json`` (under `harness run` the sequence owns it)."""
        steps = self.run.read_json(self.run.steps_file, default=[])
        notebook = f"{self.name}.ipynb"
        step = next((s for s in steps if s["notebook"] == notebook), None)
        if step is None:
            step = {"notebook": notebook, "started_at": now_iso()}
            steps.append(step)
        step.update(status=status.value, error=error)
        self.run.write_json(self.run.steps_file, steps)

    def say(self, line: str) -> None:
        """A progress line: in the notebook's output (the cell's stdout is what a runbook shows) and,
        under `harness run`, on its terminal too."""
        print(line, flush=True)
        if not self.manual:
            with open(self.run.progress_file, "a", encoding="utf-8") as fh:
                fh.write(line.rstrip("\n") + "\n")

    @property
    def results_file(self) -> Path:
        return self.run.results / f"{self.name}.json"

    def needs_services(self, settings, phase: int, wait_s: float = 0.0) -> None:
        """Stop here with one line when a service of ``phase`` does not answer (module docstring);
        ``wait_s``: keep trying that long (a stack still starting)."""
        from harness.preflight import down_line, unreachable

        down = unreachable(settings, phase, wait_s)
        if not down:
            return
        line = down_line(down, settings, phase)
        stage = {s.value.replace("-", "_"): s for s in Stage}.get(self.name.split("_", 1)[-1], Stage.HEALTH)
        self.record(CheckResult(f"{stage.value}.services", f"{self.name}: the services of phase {phase} answer",
                                stage, Status.FAIL, target="every service of the phase accepts a connection",
                                measured=f"{len(down)} not reachable", detail=line))
        if self.manual:
            self._set_step(Status.FAIL, line)
        raise ServicesDown(line, notebook=self.name)

    def record(self, results: CheckResult | Iterable[CheckResult]) -> list[CheckResult]:
        """Add results and save them all at once, so a later crash keeps what was measured. A gate
        that passed with less than 20 % of its target left becomes a warning (``with_headroom``)."""
        new = [with_headroom(r) for r in ([results] if isinstance(results, CheckResult) else results)]
        self.results.extend(new)
        save_results(self.results, self.results_file)
        return new

    def table(self, results: Iterable[CheckResult] | None = None):
        """An HTML table of results for the notebook's output."""
        import html

        from IPython.display import HTML

        rows = []
        judged = self._waivers()
        for r in (self.results if results is None else list(results)):
            waived = judged.waiver_for(r) is not None
            label, color = ("WAIVED", WAIVED_COLOR) if waived else (r.status.label, status_color(r.status))
            rows.append(
                f"<tr><td style='color:{color};font-weight:bold'>{label}</td>"
                f"<td>{html.escape(r.id)}</td><td>{html.escape(r.title)}</td>"
                f"<td>{html.escape(str(r.target))}</td><td>{html.escape(str(r.measured))}</td>"
                f"<td>{'<b>' + html.escape(r.caveat) + '</b><br>' if r.caveat else ''}{html.escape(r.detail)}</td>"
                f"<td>{r.duration_s:.2f}s</td></tr>")
        head = "".join(f"<th>{h}</th>" for h in ("status", "id", "check", "target", "measured", "detail", "took"))
        return HTML(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    def _waivers(self) -> waivers.Judgement:
        """The run's waivers (its ``waivers.toml``) laid over this runbook's results."""
        meta = self.run.read_json(self.run.meta_file, default={}) or {}
        return waivers.for_run(self.run.path, meta, self.results)

    def summary(self) -> dict[str, int]:
        return summarize(self.results)

    def gate(self) -> dict[str, int]:
        """Fail the runbook (after saving) when any check failed that no waiver in force covers (the
        run's ``waivers.toml``, ``harness.waivers``); warnings, skips, info and indeterminate gates
        pass it (an indeterminate gate makes the run NO-GO, not the runbook fail: the runbooks after
        it still leave their evidence)."""
        save_results(self.results, self.results_file)
        judged = self._waivers()
        for r in self.results:
            if (w := judged.waiver_for(r)) is not None:
                self.say(f"WAIVED {r.id} ({r.measured}): {w.label}: {w.justification}")
        failed = [r.id for r in self.results if r.status is Status.FAIL and not judged.waived(r)]
        if self.manual:
            self._set_step(Status.FAIL if failed else Status.PASS, f"{len(failed)} check(s) failed" if failed else "")
        if failed:
            raise ChecksFailed(failed, notebook=self.name)
        return self.summary()


def kernel_session_run_id() -> str:
    """``manual-<kernel start time>-<kernel id>``: the same for every call in one kernel session."""
    started = datetime.fromtimestamp(psutil.Process().create_time()).strftime("%Y%m%d-%H%M%S")
    try:
        from ipykernel.connect import get_connection_file

        kernel = Path(get_connection_file()).stem.removeprefix("kernel-")[:8]
    except Exception:  # not in a kernel (a plain interpreter): the process identifies the session
        kernel = f"pid{os.getpid()}"
    return f"manual-{started}-{kernel}"

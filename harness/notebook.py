"""What a runbook cell calls: open the run directory, record results, show them, gate on failures.

Under ``harness run`` the notebook gets the run's directory as a parameter. Opened by hand (empty
``run_dir``: JupyterLab, nbmake, any kernel), the runbook joins the session's manual run
(``harness.manual``: ``HARNESS_RUN_DIR``, ``runs/current``, or the newest manual run active in the
last hours), so 00 → 09 by hand write one run that ``09_report`` can judge GO; ``HARNESS_PARAM_<NAME>``
in the kernel's environment replaces a parameter's value (``harness.params.from_environment``). A
manual run records each runbook's step state itself, so its report says "not run" for every runbook
the session did not run.

A runbook that needs the stack calls ``rb.needs_target(tgt)`` first (``needs_services(settings,
phase)`` for our own suite, each part's ``base_url`` for a target file): with one not answering it
records one failed check and stops the notebook with one line (no traceback: ``ServicesDown`` renders
as its message in Jupyter and in papermill's error), so a runbook run by hand never measures closed
ports.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness import manual, waivers
from harness.errors import ChecksFailed, RunbookError
from harness.result import (
    CHECK_OUTCOMES,
    CheckResult,
    Stage,
    Status,
    now_iso,
    save_results,
    summarize,
    with_headroom,
)
from harness.rundir import RunDir

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
    def open(cls, run_dir: str, name: str, namespace: dict[str, Any] | None = None) -> Runbook:
        """Use the run directory ``harness run`` passed in; by hand (empty), the manual session's run.

        By hand, ``HARNESS_PARAM_<NAME>`` values from the environment are applied to ``namespace``
        (default: the kernel's globals, where the parameters cell put its values)."""
        if run_dir:
            run, why = manual.open_run(Path(run_dir).resolve()), ""
        else:
            chosen = manual.choose()
            run, why = manual.open_run(chosen.path), chosen.reason
        meta = run.read_json(run.meta_file, default={}) or {}
        rb = cls(run, name, manual=not run_dir or bool(meta.get("manual")))
        if rb.manual:  # run again by hand, a runbook replaces what it recorded before
            rb.results_file.unlink(missing_ok=True)
            manual.update_step(run, f"{name}.ipynb", started_at=now_iso(), status=Status.RUNNING.value, error="",
                               output=None, html=None)  # the executed copy of an earlier attempt: until saved
            rb.say(f"manual run: {run.path}" + (f"  ({why})" if why else ""))
            applied = _apply_environment(namespace, name)
            if applied:
                from harness.params import describe_applied

                rb.say(f"parameters from the environment: {describe_applied(applied)}")
        return rb

    def _set_step(self, status: Status, error: str = "") -> None:
        """A manual run keeps its own ``steps.json`` (under `harness run` the sequence owns it)."""
        started = {"started_at": now_iso()} if status is Status.RUNNING else {}
        manual.update_step(self.run, f"{self.name}.ipynb", **started, status=status.value, error=error)

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

    def needs_target(self, target, wait_s: float = 0.0) -> None:
        """``needs_services`` for a target: our own suite by its phase (the same check), a target file's
        parts by a TCP connection to each ``base_url``."""
        if target.ours:
            return self.needs_services(target._settings, target.phase, wait_s)
        from harness.target.probe import unreachable

        down = unreachable(target, wait_s)
        if not down:
            return
        line = (", ".join(f"{p.name} {p.base_url}" for p in down) + f" not reachable — start them, or fix their "
                f"base_url in {target.source}")
        self._stop_down(line, f"the parts of target {target.name} answer", len(down))

    def _stop_down(self, line: str, title: str, count: int) -> None:
        stage = {s.value.replace("-", "_"): s for s in Stage}.get(self.name.split("_", 1)[-1], Stage.HEALTH)
        self.record(CheckResult(f"{stage.value}.services", f"{self.name}: {title}", stage, Status.FAIL,
                                target="every part accepts a connection", measured=f"{count} not reachable",
                                detail=line))
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
        """The results as a left-aligned HTML table, detail folded under each row (``harness.tables``)."""
        from IPython.display import HTML

        from harness.tables import results_table

        judged = self._waivers()
        return HTML(results_table(self.results if results is None else results, waived=judged.waived))

    def _waivers(self) -> waivers.Judgement:
        """The run's waivers (its ``waivers.toml``) laid over this runbook's results."""
        meta = self.run.read_json(self.run.meta_file, default={}) or {}
        return waivers.for_run(self.run.path, meta, self.results)

    def summary(self) -> dict[str, int]:
        return summarize(self.results)

    def gate(self) -> GateSummary:
        """Fail the runbook (after saving) when any check failed that no waiver in force covers (the
        run's ``waivers.toml``, ``harness.waivers``); warnings, skips, info and indeterminate gates
        pass it (an indeterminate gate makes the run NO-GO, not the runbook fail: the runbooks after
        it still leave their evidence). The counts it returns show as one sentence."""
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
        return GateSummary(self.name, self.summary())

    def done(self) -> None:
        """End a runbook that records no checks of its own (the report): by hand, its step passes."""
        if self.manual:
            self._set_step(Status.PASS)


class GateSummary(dict):
    """A passed gate's counts by status (a dict), shown as a sentence:
    ``02_health passed: 9 checks (7 pass, 2 skip), none failed.``"""

    def __init__(self, name: str, counts: dict[str, int]) -> None:
        super().__init__(counts)
        self.name = name

    def __str__(self) -> str:
        total = sum(self.values())
        if not total:
            return f"{self.name} passed: no check was recorded."
        parts = ", ".join(f"{self[s.value]} {s.value}" for s in CHECK_OUTCOMES if self.get(s.value))
        return f"{self.name} passed: {total} check{'s' if total != 1 else ''} ({parts}), none failed."

    __repr__ = __str__

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython's display of a cell's last value
        printer.text(str(self))


def _apply_environment(namespace: dict[str, Any] | None, name: str) -> dict[str, Any]:
    from harness.params import from_environment

    if namespace is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return {}
        shell = get_ipython()
        if shell is None:
            return {}
        namespace = shell.user_ns
    return from_environment(namespace, notebook=f"{name}.ipynb")


def data_table(rows: list[dict]):
    """A left-aligned HTML table of plain rows (dicts with the same keys) for a notebook's output."""
    from IPython.display import HTML

    from harness.tables import html_table

    if not rows:
        return HTML("<p>(no rows)</p>")
    return HTML(html_table(list(rows[0]), [list(r.values()) for r in rows]))

"""What a runbook cell calls: open the run directory, record results, show them, gate on failures."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from harness.errors import ChecksFailed
from harness.palette import status_color
from harness.result import CheckResult, Status, save_results, summarize
from harness.rundir import RunDir

log = logging.getLogger(__name__)


class Runbook:
    """One runbook's handle on the run: ``rb = Runbook.open(run_dir, "02_health")``."""

    def __init__(self, run: RunDir, name: str) -> None:
        self.run = run
        self.name = name
        self.results: list[CheckResult] = []

    @classmethod
    def open(cls, run_dir: str, name: str) -> Runbook:
        """Use the run directory ``harness run`` passed in; by hand (empty), the shared ``runs/manual``."""
        run = RunDir(Path(run_dir).resolve()) if run_dir else RunDir.create(run_id="manual")
        for sub in ("results", "figures", "notebooks"):
            (run.path / sub).mkdir(parents=True, exist_ok=True)
        return cls(run, name)

    @property
    def results_file(self) -> Path:
        return self.run.results / f"{self.name}.json"

    def record(self, results: CheckResult | Iterable[CheckResult]) -> list[CheckResult]:
        """Add results and save them all at once, so a later crash keeps what was measured."""
        new = [results] if isinstance(results, CheckResult) else list(results)
        self.results.extend(new)
        save_results(self.results, self.results_file)
        return new

    def table(self, results: Iterable[CheckResult] | None = None):
        """An HTML table of results for the notebook's output."""
        import html

        from IPython.display import HTML

        rows = []
        for r in (self.results if results is None else list(results)):
            rows.append(
                f"<tr><td style='color:{status_color(r.status)};font-weight:bold'>{r.status.label}</td>"
                f"<td>{html.escape(r.id)}</td><td>{html.escape(r.title)}</td>"
                f"<td>{html.escape(str(r.target))}</td><td>{html.escape(str(r.measured))}</td>"
                f"<td>{html.escape(r.detail)}</td><td>{r.duration_s:.2f}s</td></tr>")
        head = "".join(f"<th>{h}</th>" for h in ("status", "id", "check", "target", "measured", "detail", "took"))
        return HTML(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")

    def summary(self) -> dict[str, int]:
        return summarize(self.results)

    def gate(self) -> dict[str, int]:
        """Fail the runbook (after saving) when any check failed; warnings and skips pass."""
        save_results(self.results, self.results_file)
        failed = [r.id for r in self.results if r.status is Status.FAIL]
        if failed:
            raise ChecksFailed(failed, notebook=self.name)
        return self.summary()

"""What a reviewer is shown about a run: the verdict with a next step beside each reason, each check
as judged once waivers are laid over it (WAIVED with the waiver's reason), and counts that say how
many were waived. One reading for the report, JUnit and ``harness run``'s closing lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.remedies import Remedy, next_step, step_remedy, waiver_remedy
from harness.result import CheckResult, Status, summarize
from harness.verdict import Reason, RunRecord, Verdict, judge, load_run
from harness.waivers import Judgement, Waiver

WAIVED = "waived"  # a display status: the result file keeps the check's own status


@dataclass(frozen=True)
class Finding:
    """One reason for NO-GO and what to do about it."""

    reason: Reason
    remedy: Remedy | None


@dataclass(frozen=True)
class Shown:
    """A check as the reviewer sees it."""

    result: CheckResult
    status: str  # pass | fail | warn | skip | info | waived
    waiver: Waiver | None
    remedy: Remedy | None

    @property
    def label(self) -> str:
        return self.status.replace("-", " ").upper()


@dataclass
class Review:
    record: RunRecord
    run_id: str
    verdict: Verdict
    findings: list[Finding]

    @property
    def waivers(self) -> Judgement | None:
        return self.record.waivers

    def shown(self, r: CheckResult) -> Shown:
        waiver = self.waivers.waiver_for(r) if self.waivers else None
        if waiver is not None:
            return Shown(r, WAIVED, waiver, next_step(r))
        return Shown(r, r.status.value, None, next_step(r))

    def step_remedy(self, step: dict) -> Remedy | None:
        return step_remedy(step, self.run_id)

    @property
    def counts(self) -> dict[str, int]:
        return self.counts_of(self.record.results)

    def counts_of(self, results: list[CheckResult]) -> dict[str, int]:
        """Checks by displayed status: waived ones leave ``fail``/``warn`` for ``waived``."""
        counts = summarize(results)
        waived = [r for r in results if self.waivers and self.waivers.waived(r)]
        for r in waived:
            counts[r.status.value] -= 1
        counts[WAIVED] = len(waived)
        return counts


def _remedy(reason: Reason, record: RunRecord, run_id: str) -> Remedy | None:
    if reason.check:
        result = next((r for r in record.results if r.id == reason.check
                       and r.status in (Status.FAIL, Status.INDETERMINATE)), None)
        return next_step(result) if result is not None else None
    if reason.notebook:
        step = next((s for s in record.steps if s["notebook"] == reason.notebook), None)
        return step_remedy(step, run_id) if step is not None else None
    if reason.waiver and record.waivers is not None:
        expired = any(a.waiver.index == reason.waiver for a in record.waivers.expired)
        return waiver_remedy(expired)
    return None


def _findings(verdict: Verdict, record: RunRecord, run_id: str) -> list[Finding]:
    """The verdict's reasons, most actionable first: failed checks, then the waivers' own problems, then
    runbooks that failed for another reason than their checks; runbooks skipped after a failure or
    never run are one line, and a runbook that failed only by its checks is left to those checks."""
    reasons = [r if isinstance(r, Reason) else Reason(str(r)) for r in verdict.reasons]
    checks = [r for r in reasons if r.check]
    failed = {r.check for r in checks}
    by_checks = {f"{stem}.ipynb" for stem, rs in record.by_runbook.items() if any(r.id in failed for r in rs)}
    steps = {s["notebook"]: s for s in record.steps}
    waiting, broken = [], []
    for r in reasons:
        if not r.notebook:
            continue
        status = steps.get(r.notebook, {}).get("status")
        if status in (Status.SKIP, Status.NOT_RUN):
            waiting.append(r)
        elif not (r.notebook in by_checks and ("ChecksFailed" in r or "check(s) failed" in r)):
            broken.append(r)
    ordered = [*checks, *[r for r in reasons if not (r.check or r.notebook)], *broken]
    out = [Finding(r, _remedy(r, record, run_id)) for r in ordered]
    if waiting:
        stems = [r.notebook.removesuffix(".ipynb") for r in waiting]
        # the first screen keeps one line: the whole list is the report's Runbooks table
        names = ", ".join(stems) if len(stems) <= 4 else f"{stems[0]}, {stems[1]} … {stems[-1]} (each under Runbooks)"
        never = all(steps.get(r.notebook, {}).get("status") is Status.NOT_RUN for r in waiting)
        line = Reason(f"{len(waiting)} runbook(s) {'never ran' if never else 'skipped or never run'}: {names}",
                      notebook=waiting[0].notebook)
        out.append(Finding(line, _remedy(line, record, run_id)))
    return out


def review(record: RunRecord, run_id: str) -> Review:
    verdict = judge(record)
    return Review(record, run_id, verdict, _findings(verdict, record, run_id))


def review_run(run_dir: Path) -> Review:
    record = load_run(Path(run_dir))
    return review(record, record.meta.get("run_id", Path(run_dir).name))

"""GO or NO-GO: what a run directory says, judged against what the run was supposed to run.

``run.json`` lists the runbooks of the run's sequence (``runbooks``: notebook, required, report);
``steps.json`` says what happened to each. A runbook with no step record is ``not-run``. The run is
GO only when every required runbook passed (the report step is judged by the others, never by
itself), no check failed or was left indeterminate, and at least one check was recorded. So a report
written by hand after only ``00_validate_env`` says NO-GO, naming every runbook that never ran; a
load gate whose interval straddles its target, or that was measured while the box was contended,
says NO-GO with its caveat (how many more requests would decide it, what contended the box).

Waivers (``harness.waivers``, the run's ``waivers.toml``) lay a judgement over the results: a failed
check that a waiver in force covers does not make NO-GO; an expired waiver, or one refused because
it covers a whole stage of the run, does. Each reason is a ``Reason``: a string that also says what
it is about (``check``, ``notebook`` or ``waiver``), so the report and the CLI can put the next step
beside it (``harness.remedies``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness import waivers as waivers_mod
from harness.result import CheckResult, Status, format_interval, load_results
from harness.rundir import RunDir


class Reason(str):
    """A reason for NO-GO: its text, and the check, runbook or waiver it is about."""

    check: str = ""
    notebook: str = ""
    waiver: int = 0

    def __new__(cls, text: str, *, check: str = "", notebook: str = "", waiver: int = 0) -> Reason:
        self = super().__new__(cls, text)
        self.check, self.notebook, self.waiver = check, notebook, waiver
        return self


@dataclass
class Verdict:
    go: bool
    reasons: list[str]

    @property
    def label(self) -> str:
        return "GO" if self.go else "NO-GO"


@dataclass
class RunRecord:
    """A run directory, read: metadata, every planned runbook's step, results by runbook."""

    meta: dict
    steps: list[dict]
    results: list[CheckResult]
    by_runbook: dict[str, list[CheckResult]]
    waivers: waivers_mod.Judgement | None = field(default=None)


def load_run(run_dir: Path) -> RunRecord:
    run = RunDir(Path(run_dir))
    meta = run.read_json(run.meta_file, default={})
    steps = run.read_json(run.steps_file, default=[])
    for s in steps:
        s["status"] = Status.parse(s.get("status", Status.PENDING))
    planned = {p["notebook"]: p for p in meta.get("runbooks", [])}
    for s in steps:
        s.setdefault("required", planned.get(s["notebook"], {}).get("required", True))
        s.setdefault("report", planned.get(s["notebook"], {}).get("report", False))
    recorded = {s["notebook"] for s in steps}
    for notebook, plan in planned.items():  # planned but never started: not run
        if notebook not in recorded:
            steps.append({"notebook": notebook, "status": Status.NOT_RUN, "required": plan.get("required", True),
                          "report": plan.get("report", False), "error": "", "duration_s": 0.0})
    order = list(planned)
    steps.sort(key=lambda s: order.index(s["notebook"]) if s["notebook"] in planned else len(order))
    by_runbook = {path.stem: load_results(path) for path in sorted(run.results.glob("*.json"))}
    results = [r for rs in by_runbook.values() for r in rs]
    return RunRecord(meta, steps, results, by_runbook, waivers_mod.for_run(run.path, meta, results))


def decide(steps: list[dict], results: list[CheckResult], waivers: waivers_mod.Judgement | None = None) -> Verdict:
    """GO when every required runbook (the report step aside) passed, no check failed or was left
    indeterminate unwaived, and no waiver is expired or refused."""
    reasons = []
    for s in steps:
        status = Status.parse(s.get("status", Status.PENDING))
        if s.get("report") or status is Status.PASS or not s.get("required", True):
            continue
        reasons.append(Reason(f"runbook {s['notebook'].removesuffix('.ipynb')} {status.label.lower()}"
                              + (f": {s['error']}" if s.get("error") else ""), notebook=s["notebook"]))
    for r in results:
        if r.status not in (Status.FAIL, Status.INDETERMINATE) or (waivers and waivers.waived(r)):
            continue
        word = "failed" if r.status is Status.FAIL else "indeterminate"
        interval = f", 95 % interval {format_interval(r)}" if r.interval is not None else ""
        reasons.append(Reason(f"check {r.id} {word} (target {r.target}, measured {r.measured}{interval})"
                              + (f": {r.caveat}" if r.caveat else ""), check=r.id))
    if waivers is not None:
        reasons += [Reason(text, waiver=index) for text, index in waivers.problems()]
    if not results:
        reasons.append(Reason("no check results were recorded"))
    return Verdict(not reasons, reasons)


def judge(record: RunRecord) -> Verdict:
    """The verdict of a run directory as read (its steps, results and waivers)."""
    return decide(record.steps, record.results, record.waivers)


def verdict_of(run_dir: Path) -> Verdict:
    return judge(load_run(Path(run_dir)))

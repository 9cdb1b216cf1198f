"""A run as JUnit XML, for a CI system's test view: one test case per ``CheckResult``.

One ``<testsuite>`` per runbook (its results file), one ``<testcase>`` per check: ``classname`` the
stage, ``name`` the check id, ``time`` its duration. A failed check carries ``<failure>`` with target
vs measured, an indeterminate one ``<failure type="indeterminate">`` (the run is NO-GO: a CI view must
not show it green); a skipped one ``<skipped>``; warnings and info figures pass and say so in
``<system-out>``. Runbooks that did not pass without a failed check to show for it (a cell error, an
interruption, a required runbook that never ran) are ``<error>`` cases of one more suite,
``runbooks``, so the CI view never says green for a NO-GO run. A check waived by the run's waivers
is ``<skipped type="waived">`` with the measured value and the waiver's reason; an expired or
refused waiver is a ``<failure>`` of a ``waivers`` suite. Failures, errors and warnings carry their
next step (``harness.remedies``).
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.result import CheckResult, Status
from harness.review import Review, review_run
from suite.fsio import write_atomic


def _case(suite: ET.Element, r: CheckResult, seen: Review) -> None:
    case = ET.SubElement(suite, "testcase", classname=r.stage.value, name=r.id, time=f"{r.duration_s:.3f}")
    shown = seen.shown(r)
    said = f"{r.title}\ntarget: {r.target}\nmeasured: {r.measured}\n{r.detail}".strip()
    if shown.remedy:
        said += f"\nnext step: {shown.remedy.text()}"
    if shown.waiver is not None:
        w = shown.waiver
        ET.SubElement(case, "skipped", type="waived", message=(
            f"WAIVED ({r.status.label} as measured: {r.measured}, target {r.target}) by {w.label}: "
            f"{w.justification}")).text = said
    elif r.status in (Status.FAIL, Status.INDETERMINATE):
        failure = ET.SubElement(case, "failure", message=f"target {r.target}, measured {r.measured}"
                                + (f": {r.caveat}" if r.caveat else "")
                                + (f"; next: {shown.remedy.step}" if shown.remedy else ""), type=r.status.value)
        failure.text = said
    elif r.status is Status.SKIP:
        ET.SubElement(case, "skipped", message=r.detail or "skipped")
    else:
        ET.SubElement(case, "system-out").text = f"{r.status.label}: {said}"


def build(run_dir: Path) -> ET.ElementTree:
    seen = review_run(Path(run_dir))
    record = seen.record
    root = ET.Element("testsuites", name=f"harness run {record.meta.get('run_id', Path(run_dir).name)}")
    for stem, results in record.by_runbook.items():
        waived = [r for r in results if seen.shown(r).waiver is not None]
        suite = ET.SubElement(root, "testsuite", name=stem, tests=str(len(results)),
                              failures=str(sum(r.status in (Status.FAIL, Status.INDETERMINATE) and r not in waived
                                               for r in results)),
                              errors="0", skipped=str(sum(r.status is Status.SKIP for r in results) + len(waived)),
                              time=f"{sum(r.duration_s for r in results):.3f}")
        for r in results:
            _case(suite, r, seen)
    broken = [s for s in record.steps if not s.get("report") and s.get("required", True)
              and s["status"] is not Status.PASS
              and not any(r.status is Status.FAIL for r in record.by_runbook.get(Path(s["notebook"]).stem, []))]
    if broken:
        suite = ET.SubElement(root, "testsuite", name="runbooks", tests=str(len(broken)), failures="0",
                              errors=str(len(broken)), skipped="0")
        for s in broken:
            stem = Path(s["notebook"]).stem
            case = ET.SubElement(suite, "testcase", classname="runbook", name=stem,
                                 time=f"{s.get('duration_s') or 0:.3f}")
            fix = seen.step_remedy(s)
            ET.SubElement(case, "error", message=f"runbook {stem} {s['status'].label.lower()}",
                          type=s["status"].value).text = (s.get("error") or "") + (
                              f"\nnext step: {fix.text()}" if fix else "")
    _waiver_cases(root, seen)
    ET.indent(root)
    return ET.ElementTree(root)


def _waiver_cases(root: ET.Element, seen: Review) -> None:
    """Expired or refused waivers fail the run: one ``waivers`` suite with a failure per waiver."""
    judged = seen.waivers
    problems = [f for f in seen.findings if f.reason.waiver] + \
        [f for f in seen.findings if judged and judged.error and str(f.reason).startswith("the run's waivers")]
    if not problems:
        return
    suite = ET.SubElement(root, "testsuite", name="waivers", tests=str(len(problems)),
                          failures=str(len(problems)), errors="0", skipped="0")
    for f in problems:
        case = ET.SubElement(suite, "testcase", classname="waivers", name=f"waiver {f.reason.waiver or 'file'}")
        ET.SubElement(case, "failure", message=str(f.reason), type="waiver").text = (
            f"{f.reason}\nnext step: {f.remedy.text()}" if f.remedy else str(f.reason))


def write_junit(run_dir: Path, target: Path) -> Path:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    build(run_dir).write(buf, encoding="utf-8", xml_declaration=True)
    return write_atomic(target, buf.getvalue())

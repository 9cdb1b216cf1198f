"""A run as JUnit XML, for a CI system's test view: one test case per ``CheckResult``.

One ``<testsuite>`` per runbook (its results file), one ``<testcase>`` per check: ``classname`` the
stage, ``name`` the check id, ``time`` its duration. A failed check carries ``<failure>`` with target
vs measured; a skipped one ``<skipped>``; warnings and info figures pass and say so in
``<system-out>``. Runbooks that did not pass without a failed check to show for it (a cell error, an
interruption, a required runbook that never ran) are ``<error>`` cases of one more suite,
``runbooks``, so the CI view never says green for a NO-GO run.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

from harness.result import CheckResult, Status
from harness.verdict import load_run
from suite.fsio import write_atomic


def _case(suite: ET.Element, r: CheckResult) -> None:
    case = ET.SubElement(suite, "testcase", classname=r.stage.value, name=r.id, time=f"{r.duration_s:.3f}")
    said = f"{r.title}\ntarget: {r.target}\nmeasured: {r.measured}\n{r.detail}".strip()
    if r.status is Status.FAIL:
        failure = ET.SubElement(case, "failure", message=f"target {r.target}, measured {r.measured}", type="fail")
        failure.text = said
    elif r.status is Status.SKIP:
        ET.SubElement(case, "skipped", message=r.detail or "skipped")
    else:
        ET.SubElement(case, "system-out").text = f"{r.status.label}: {said}"


def build(run_dir: Path) -> ET.ElementTree:
    record = load_run(Path(run_dir))
    root = ET.Element("testsuites", name=f"harness run {record.meta.get('run_id', Path(run_dir).name)}")
    for stem, results in record.by_runbook.items():
        suite = ET.SubElement(root, "testsuite", name=stem, tests=str(len(results)),
                              failures=str(sum(r.status is Status.FAIL for r in results)), errors="0",
                              skipped=str(sum(r.status is Status.SKIP for r in results)),
                              time=f"{sum(r.duration_s for r in results):.3f}")
        for r in results:
            _case(suite, r)
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
            ET.SubElement(case, "error", message=f"runbook {stem} {s['status'].label.lower()}",
                          type=s["status"].value).text = s.get("error") or ""
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(run_dir: Path, target: Path) -> Path:
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    build(run_dir).write(buf, encoding="utf-8", xml_declaration=True)
    return write_atomic(target, buf.getvalue())

"""The report's first screen, measured in headless Chromium at 1280×800: the verdict with its reasons and
next steps, the key figures with headroom, the waivers and the changes since the last run all end above
the fold, on a NO-GO run with many reasons, six load scenarios, waivers (used and expired) and a
previous run to compare with; the details start below them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report import write_report
from harness.result import CheckResult, Stage, Status, save_results
from harness.rundir import RunDir
from harness.sequence import default_sequence, run_meta

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RUNBOOKS = ["00_validate_env", "01_bring_up", "02_health", "03_smoke", "04_security", "05_load", "06_fault_drill",
            "07_backup", "08_monitoring"]
SCENARIOS = [("seed-100x5", 1350, 3000, 4.1, None), ("seed-50x3", 8300, 30000, 0.9, 610),
             ("seed-20x2", 16900, 70000, 0.4, 640), ("rag", 2400, 30000, 1.6, None), ("embed", 45, 1000, 20.5, None),
             ("tools", 30, 2000, 3.0, None)]
WAIVERS = '''[[waiver]]
check = "env.gpu"
justification = "the staging box has no GPU; the gpu profile is certified on the release box"
owner = "rm@example.org"
expires = 2099-01-31
[[waiver]]
check = "load.seed-100x5.p95"
justification = "known slow gateway on staging"
owner = "ops@example.org"
expires = 2026-11-30
'''


def _run(root: Path, run_id: str, started: str, scale: float, broken: bool) -> Path:
    run = RunDir.create(root, run_id)
    run.write_json(run.meta_file, {**run_meta(run, default_sequence(), {"profile": "seed"}, profile="seed"),
                                   "started_at": started, "finished_at": started})
    steps = [{"notebook": f"{n}.ipynb", "status": "pass"} for n in RUNBOOKS]
    if broken:
        steps[0].update(status="fail", error="cell 3: ChecksFailed: 2 check(s) failed: env.ports, env.disk")
        for s in steps[1:]:
            s.update(status="skip", error="not run: an earlier runbook failed")
    run.write_json(run.steps_file, steps)
    save_results([
        CheckResult("env.gpu", "GPUs", Stage.ENVIRONMENT, Status.FAIL if broken else Status.SKIP,
                    target="NVML sees a GPU", measured="no GPU"),
        CheckResult("env.disk", "Free disk", Stage.ENVIRONMENT, Status.FAIL if broken else Status.PASS,
                    target=">= 5 GB", value=3.2 if broken else 40.0, unit="GB", detail="/srv"),
        CheckResult("env.ports", "Service ports", Stage.ENVIRONMENT, Status.FAIL if broken else Status.PASS,
                    target="free or held by our suite: 8000, 8001, 8004", measured="2 free, 0 ours, 1 taken",
                    detail="8000 for gateway held by pid 4242 (python3)" if broken else "all free")],
        run.results / "00_validate_env.json")
    load = []
    for name, p95, target, rps, ttft in SCENARIOS:
        load += [CheckResult(f"load.{name}.p95", f"{name}: p95", Stage.LOAD, Status.PASS, target=f"p95<{target}ms",
                             value=p95 * scale, unit="ms"),
                 CheckResult(f"load.{name}.run", f"{name}", Stage.LOAD, Status.PASS, target="100 requests at 5 users",
                             value=rps / scale, unit="req/s", measured=f"{rps / scale:.2f} req/s")]
        if ttft:
            load.append(CheckResult(f"load.{name}.ttft_p95", "TTFT", Stage.LOAD, Status.INFO,
                                    target="shown, not a gate", value=ttft * scale, unit="ms"))
    if broken:
        load[0].status = Status.WARN
    save_results(load, run.results / "05_load.json")
    if broken:
        (run.path / "waivers.toml").write_text(WAIVERS)
    return write_report(run.path)


MEASURE = """<script>
window.addEventListener('load', () => {
  const out = {height: window.innerHeight};
  for (const id of ['verdict', 'fs-figures', 'fs-waivers', 'fs-changes', 'runbooks']) {
    const r = document.getElementById(id).getBoundingClientRect(); out[id] = [r.top, r.bottom];
  }
  document.body.setAttribute('data-measured', JSON.stringify(out));
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install.sh installs it with the test extra)")
@pytest.mark.integration
def test_verdict_figures_waivers_and_changes_are_above_the_fold(tmp_path):
    _run(tmp_path / "runs", "20261201-100000-aaaa", "2026-12-01T10:00:00+00:00", 1.0, broken=False)
    report = _run(tmp_path / "runs", "20261205-100000-bbbb", "2026-12-05T10:00:00+00:00", 1.25, broken=True)
    html = report.read_text()
    assert "next: Held: 8000 for gateway held by pid 4242" in html and "EXPIRED" in html and ">WAIVED<" in html
    assert "56 %" in html  # seed-100x5's p95 1687.5 ms of its 3000 ms budget
    probe = report.with_name("measured.html")  # the report itself has no script; a copy gets the ruler
    probe.write_text(html.replace("</body>", MEASURE + "</body>"))
    shown = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,800",
         "--virtual-time-budget=3000", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    found = re.search(r"data-measured=\"([^\"]+)\"", shown.stdout)
    assert found, shown.stdout[-2000:]
    box = json.loads(found.group(1).replace("&quot;", '"'))
    for part in ("verdict", "fs-figures", "fs-waivers", "fs-changes"):
        assert box[part][1] <= box["height"], (part, box)
    assert box["runbooks"][0] >= box["fs-figures"][1]  # the details come after


def test_backquoted_text_in_next_steps_and_waivers_cannot_inject_markup():
    """A waiver reason or a result's message is untrusted: `_code` escapes before it adds <code>."""
    from harness.report import _code

    shown = str(_code('run `harness run --target <img src=x onerror=alert(1)>` then "<script>alert(2)</script>"'))
    assert "<script>" not in shown and "<img" not in shown
    assert "<code>harness run --target &lt;img src=x onerror=alert(1)&gt;</code>" in shown
    assert "&lt;script&gt;" in shown

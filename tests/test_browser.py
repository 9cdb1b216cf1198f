"""A person's view, in a real browser: Playwright for Python driving Debian's Chromium (``executable_path``,
no browser download).

- JupyterLab started at the project root as the README starts it: ``00_validate_env`` opened, Run All,
  the result table shown (left-aligned) with the gate's sentence; saved, the tracked notebook is unchanged
  (``git status``) and its executed copy is in the manual run (``harness.lab``).
- The completion report opened from ``file://`` with the network off: no request leaves the page, no
  console error, the verdict and the key figures above the fold.

Screenshots go to ``runs/browser-tests/<time>/`` (CI keeps ``runs/`` as artifacts).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness import manual
from harness.charts import bar_chart
from harness.report import write_report
from harness.result import CheckResult, Stage, Status, save_results
from harness.rundir import RunDir
from harness.sequence import default_sequence, load_sequence, run_meta
from suite.net import free_port
from suite.testing import free_port_offset

ROOT = Path(__file__).parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FOLD = {"width": 1280, "height": 800}

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install.sh installs it)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = ROOT / "runs" / "browser-tests" / time.strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM,
                                      args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, gemma_path):
    """``jupyter lab`` at the project root, on a free port, with a stack's settings of its own (nothing
    listens there: 00_validate_env needs none) and the session's manual run named once."""
    home = tmp_path_factory.mktemp("lab")
    settings_dir = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings_dir.mkdir(parents=True)
    (settings_dir / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    run_dir = ROOT / "runs" / time.strftime("browser-lab-%Y%m%d-%H%M%S")
    port, token = free_port(), f"t{os.getpid()}"
    env = {**os.environ, "SUITE_DATA_DIR": str(home / "data"), "SUITE_PORT_OFFSET": str(free_port_offset()),
           "SUITE_INFERENCE__CHAT__PATH": str(gemma_path), "SUITE_INFERENCE__CODE__PATH": str(gemma_path),
           "HARNESS_RUN_DIR": str(run_dir), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.token={token}", f"--ServerApp.root_dir={ROOT}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
               f"--LabApp.workspaces_dir={home / 'workspaces'}", f"--LabApp.user_settings_dir={home / 'settings'}"]
    if os.geteuid() == 0:
        command.append("--allow-root")  # CI runs as root
    log = open(home / "lab.log", "w")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/status", params={"token": token}, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            break
        time.sleep(0.5)
    else:
        server.kill()
    try:
        assert server.poll() is None, (home / "lab.log").read_text()[-3000:]
        yield {"url": base, "token": token, "run": run_dir, "log": home / "lab.log"}
    finally:
        server.send_signal(signal.SIGTERM)  # Lab stops its kernels and exits
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        if (run_dir / "run.json").is_file():
            manual.close(run_dir)  # a user's next session by hand must not join this one


def _run_all(page) -> None:
    """Run > Run All Cells, until the first code cell shows it started (``[*]`` or ``[1]``): a click
    while the kernel is still connecting is lost."""
    first = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt").first
    for _ in range(4):
        page.click(".lm-MenuBar-itemLabel:text-is('Run')")
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function("el => /\\[(\\*|\\d+)\\]/.test(el.textContent)", arg=first.element_handle(),
                                   timeout=20_000)
            return
        except sync_api.TimeoutError:
            continue
    raise AssertionError("Run All Cells never started the notebook")


def _git_status(*paths: str) -> str:
    # on a fresh clone every notebook is "racily clean" and goes through the nbstripout filter once
    # (a Python start each: a minute and more on a busy 2-core box)
    return subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", *paths], capture_output=True,
                          text=True, timeout=300).stdout


def _extension_enabled() -> bool:
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    return bool(ExtensionConfigManager(read_config_path=jupyter_config_path()).get_jpserver_extensions()
                .get("harness.lab"))


def test_jupyterlab_runs_00_validate_env_shows_its_table_and_saves_it_clean(lab, browser, artifacts):
    assert _extension_enabled(), "the harness.lab server extension is not enabled: run scripts/install.sh"
    before = _git_status("runbooks", "notebooks")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{lab['url']}/lab/tree/runbooks/00_validate_env.ipynb?token={lab['token']}")
    try:
        page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
        # the kernel has started and connected (the status bar names it), not only the page
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=120_000)
        _run_all(page)
        table = page.locator("table.harness-results")
        table.wait_for(state="visible", timeout=240_000)
        page.get_by_text("00_validate_env passed:", exact=False).wait_for(state="visible", timeout=240_000)
    finally:
        page.screenshot(path=str(artifacts / "lab-00_validate_env.png"))
    page.get_by_text("00_validate_env passed:", exact=False).scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "lab-00_validate_env-gate.png"))

    checks = table.locator("tbody.check")
    assert checks.count() >= 8
    assert "env.python" in table.inner_text() and "env.ports" in table.inner_text()
    align = table.locator("td").first.evaluate("cell => getComputedStyle(cell).textAlign")
    assert align == "left"
    folded = table.locator("tr.detail details").first  # the detail is under its row, folded
    assert folded.evaluate("d => d.open") is False
    assert f"manual run: {lab['run'].resolve()}" in page.locator(".jp-OutputArea-output").first.inner_text() or \
        f"manual run: {lab['run'].resolve()}" in page.inner_text(".jp-NotebookPanel")

    page.keyboard.press("Control+s")  # the save hook keeps the executed copy, then points the step at it
    deadline = time.monotonic() + 60
    while not _step(lab["run"]).get("html") and time.monotonic() < deadline:
        time.sleep(0.5)
    step = _step(lab["run"])
    assert step.get("html") == "notebooks/00_validate_env.html", (step, lab["log"].read_text()[-3000:])
    assert step["status"] == "pass" and (lab["run"] / step["html"]).is_file()
    kept = json.loads((lab["run"] / step["output"]).read_text())
    assert any(c.get("outputs") for c in kept["cells"] if c["cell_type"] == "code")
    # the hook runs before the write: wait for the save itself to end (the tab no longer dirty, and
    # jupyter_server's backup copy `.~NAME` removed) before reading git status
    page.wait_for_function("() => !document.querySelector('.lm-TabBar-tab.jp-mod-dirty')", timeout=120_000)
    backup = ROOT / "runbooks" / ".~00_validate_env.ipynb"
    deadline = time.monotonic() + 60
    while backup.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not backup.exists(), "the save never finished"
    assert _git_status("runbooks", "notebooks") == before  # the tracked notebook did not change
    page.close()

    # this manual session's report (only 00 ran): opened offline, it says NO-GO and why, at the top
    write_report(lab["run"])
    found = _open_offline(browser, lab["run"] / "report.html", artifacts / "report-manual-session.png")
    assert all(url.startswith(("file://", "data:")) for url in found["requests"]), found["requests"]
    assert found["errors"] == []
    assert found["texts"]["verdict"].startswith("NO-GO") and "never ran: 01_bring_up" in found["texts"]["verdict"]
    assert found["boxes"]["#verdict"]["y"] < FOLD["height"]


def _step(run: Path) -> dict:
    steps = json.loads((run / "steps.json").read_text()) if (run / "steps.json").is_file() else []
    return next((s for s in steps if s["notebook"] == "00_validate_env.ipynb"), {})


def _go_run(root: Path) -> Path:
    """A finished GO run of the release sequence, as `harness run` leaves it (every runbook passed)."""
    run = RunDir.create(root, "20261207-100000-abcd")
    run.write_json(run.meta_file, {**run_meta(run, default_sequence(), {"profile": "seed"}, profile="seed"),
                                   "finished_at": "2026-12-07T10:07:00+00:00"})
    run.write_json(run.steps_file, [{"notebook": s.notebook, "status": "pass", "duration_s": 12.0}
                                    for s in load_sequence().steps])
    save_results([CheckResult("env.disk", "Free disk", Stage.ENVIRONMENT, Status.PASS, target=">= 5 GB", value=40.2,
                              unit="GB", duration_s=0.01),
                  CheckResult("health.gateway.ready", "gateway ready", Stage.HEALTH, Status.PASS, target="HTTP 200",
                              value=8.4, unit="ms", duration_s=0.02)], run.results / "00_validate_env.json")
    save_results([CheckResult(f"load.{name}.p95", f"{name}: p95<{target}ms", Stage.LOAD, Status.PASS,
                              target=f"p95<{target}ms", value=value, unit="ms", duration_s=30.0)
                  for name, target, value in (("seed-100x5", 3000, 1140.0), ("seed-50x3", 30000, 7012.0),
                                              ("seed-20x2", 70000, 15900.0))]
                 + [CheckResult("load.seed-50x3.ttft_p95", "TTFT", Stage.LOAD, Status.INFO,
                                target="shown, not a gate", value=210.0, unit="ms")], run.results / "05_load.json")
    bar_chart(["gateway.health", "gateway.ready"], [2.1, 8.4], "Probe latency", "ms",
              run.figures / "health_probe_latency.svg", statuses=[Status.PASS, Status.PASS])
    write_report(run.path)
    return run.path


def _open_offline(browser, report: Path, shot: Path) -> dict:
    """The report from file:// with the network off; every request and console error it made."""
    context = browser.new_context(viewport=FOLD, offline=True)
    page = context.new_page()
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    page.screenshot(path=str(shot))  # the viewport: what is above the fold
    page.screenshot(path=str(shot.with_name(shot.stem + "-full.png")), full_page=True)
    boxes = {sel: page.locator(sel).first.bounding_box() if page.locator(sel).count() else None
             for sel in ("#verdict", "#key-figures", "#key-figures tbody tr")}
    texts = {"verdict": page.inner_text("#verdict"),
             "figures": page.inner_text("#key-figures") if boxes["#key-figures"] else ""}
    context.close()
    return {"requests": requests, "errors": errors, "boxes": boxes, "texts": texts}


def test_the_report_opens_from_file_offline_with_verdict_and_key_figures_above_the_fold(
        browser, artifacts, tmp_path):
    # the detector first: a page that wants the network is seen asking, a script error is seen
    needy = tmp_path / "needy.html"
    needy.write_text('<html><body><img src="http://example.invalid/x.png"><script>nope(</script>'
                     '<table id="key-figures"><tbody><tr><td>x</td></tr></tbody></table>'
                     '<div id="verdict">NO-GO</div></body></html>')
    caught = _open_offline(browser, needy, artifacts / "detector.png")
    assert any("example.invalid" in url for url in caught["requests"]) and caught["errors"]

    report = _go_run(tmp_path / "runs") / "report.html"
    found = _open_offline(browser, report, artifacts / "report-go.png")
    assert all(url.startswith(("file://", "data:")) for url in found["requests"]), found["requests"]
    assert found["errors"] == []
    verdict, figures, first_row = (found["boxes"][k] for k in ("#verdict", "#key-figures", "#key-figures tbody tr"))
    assert verdict["y"] + verdict["height"] <= FOLD["height"], verdict
    assert first_row["y"] + first_row["height"] <= FOLD["height"], first_row  # at least the first figure
    assert found["texts"]["verdict"].startswith("GO")
    assert "load.seed-100x5.p95" in found["texts"]["figures"] and "1140.0 ms" in found["texts"]["figures"]
    assert figures is not None

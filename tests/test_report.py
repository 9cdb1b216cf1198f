"""The report a reviewer signs: self-contained (nothing fetched from a network), rendered completely by
headless Chromium with the network off, with its key figures, stages and statuses."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.charts import bar_chart
from harness.report import write_report
from harness.result import CheckResult, Stage, Status, save_results
from harness.rundir import RunDir
from harness.sequence import default_sequence, run_meta

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def report(tmp_path) -> Path:
    run = RunDir.create(tmp_path / "runs", "20260101-100000-abcd")
    run.write_json(run.meta_file, {**run_meta(run, default_sequence(), {"profile": "seed"}, profile="seed"),
                                   "finished_at": "2026-01-01T10:10:00+00:00"})
    run.write_json(run.steps_file, [{"notebook": "00_validate_env.ipynb", "status": "pass"},
                                    {"notebook": "05_load.ipynb", "status": "fail", "error": "1 check(s) failed"}])
    save_results([CheckResult("env.disk", "Free disk", Stage.ENVIRONMENT, Status.PASS, target=">= 5 GB",
                              value=40.2, unit="GB", duration_s=0.01)], run.results / "00_validate_env.json")
    save_results([CheckResult("load.seed-100x5.p95", "seed-100x5: p95<3000ms", Stage.LOAD, Status.PASS,
                              target="p95<3000ms", value=1230.5, unit="ms", evidence=["load/seed-100x5/locust.html"],
                              duration_s=30.0),
                  CheckResult("load.seed-50x3.ttft_p95", "TTFT", Stage.LOAD, Status.INFO,
                              target="shown, not a gate", value=210.0, unit="ms"),
                  CheckResult("load.rag.p95", "rag: p95<30s", Stage.LOAD, Status.FAIL, target="p95<30s",
                              value=31000.0, unit="ms", detail="한국어 질의 포함")], run.results / "05_load.json")
    bar_chart(["a", "b"], [1.0, 2.0], "Probe latency", "ms", run.figures / "probe_latency.svg",
              statuses=[Status.PASS, Status.FAIL])
    return write_report(run.path)


class _Resources(HTMLParser):
    """Every URL the page would load by itself (not links a reader may follow)."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for attr in ("src", "srcset", "data", "poster"):
            if attrs.get(attr):
                self.loads.append(attrs[attr])
        if tag == "link" and attrs.get("href"):
            self.loads.append(attrs["href"])
        if tag in ("script", "iframe", "object", "embed"):
            self.loads.append(f"<{tag}>")


def test_the_report_loads_nothing_from_outside_itself(report):
    html = report.read_text()
    parser = _Resources()
    parser.feed(html)
    assert all(url.startswith("data:") for url in parser.loads), parser.loads
    assert not re.search(r"url\(\s*['\"]?(?!data:|#)", html) and "@import" not in html
    # and it says what a reviewer looks for first
    assert 'id="key-figures"' in html and "load.seed-100x5.p95" in html and "1230.5 ms" in html
    assert "01_bring_up" in html and ">NOT RUN<" in html  # a planned runbook with no record
    assert ">INFO<" in html and "shown, not a gate" in html and "한국어" in html


# Chromium's own background traffic (clock, accounts, updates), not anything the page asked for
BROWSER_HOSTS = re.compile(r"(^|\.)(google\.com|googleapis\.com|gstatic\.com|gvt1\.com|googleusercontent\.com)(:\d+)?$")


class _DeadEnd:
    """The only network Chromium gets: a proxy port that records each request line and answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    @property
    def page_requests(self) -> list[str]:
        """Requests other than the browser's own: ``GET http://host/...`` or ``CONNECT host:443``."""
        out = []
        for line in self.requests:
            target = (line.split(" ") + ["", ""])[1]
            host = target.split("://", 1)[-1].split("/", 1)[0]
            if not BROWSER_HOSTS.search(host):
                out.append(line)
        return out

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.requests.append(conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace"))
                except OSError:
                    self.requests.append("?")


def _render(page: Path, tmp_path: Path, dead_end: _DeadEnd) -> subprocess.CompletedProcess:
    """Headless Chromium with the network off: every request, DNS included, goes to the dead-end proxy."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--proxy-server=127.0.0.1:{dead_end.port}",
         "--proxy-bypass-list=<-loopback>", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/install.sh installs it with the test extra)")
@pytest.mark.integration
def test_the_report_renders_completely_offline_in_headless_chromium(report, tmp_path):
    # the detector first: a page that needs the network is caught asking for it
    needy = tmp_path / "needs_network.html"
    needy.write_text('<html><body><img src="http://example.invalid/x.png"><p id="end">end</p></body></html>')
    probe = _DeadEnd()
    _render(needy, tmp_path, probe)
    assert any("example.invalid" in r for r in probe.page_requests), probe.requests

    dead_end = _DeadEnd()
    rendered = _render(report, tmp_path, dead_end)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert not dead_end.page_requests  # the report asked the network for nothing
    dom = rendered.stdout
    for section in ('id="verdict"', 'id="key-figures"', 'id="since-last-run"', 'id="runbooks"', "<svg",
                    "Environment", "</html>"):
        assert section in dom, section
    assert dom.count("<svg") == report.read_text().count("<svg")  # every chart made it into the DOM


def test_a_quick_profile_report_says_it_is_not_the_release_pipeline(tmp_path):
    run = RunDir.create(tmp_path / "runs", "20260101-110000-abcd")
    run.write_json(run.meta_file, run_meta(run, default_sequence(), {"profile": "quick"}, profile="quick"))
    quick = write_report(run.path).read_text()
    assert 'id="profile-note"' in quick and "not the release pipeline" in quick
    run = RunDir.create(tmp_path / "runs", "20260101-120000-abcd")
    run.write_json(run.meta_file, run_meta(run, default_sequence(), {}, profile="seed"))
    assert 'id="profile-note"' not in write_report(run.path).read_text()


def test_key_figures_show_each_gates_interval_headroom_and_caveat_and_the_box(tmp_path):
    """An indeterminate gate is NO-GO with how many requests would decide it, a pass with little
    headroom is a warning, the box's readings stand beside the gates, JUnit counts the undecided."""
    from harness import junit
    from harness.notebook import Runbook
    from harness.palette import STATUS_COLORS
    from harness.verdict import verdict_of

    rb = Runbook.open(str(tmp_path / "run"), "05_load")
    rb.record([
        CheckResult("load.seed-20x2.p95", "seed-20x2: p95<70s", Stage.LOAD, Status.INDETERMINATE, target="p95<70s",
                    value=17300.0, unit="ms", interval=[16100.0, None],
                    caveat="about 52 more request(s) would decide it (72 in all; the scenario's budget is 100)"),
        CheckResult("load.seed-100x5.p95", "seed-100x5: p95<3000ms", Stage.LOAD, Status.PASS, target="p95<3000ms",
                    value=2630.0, unit="ms", interval=[2400.0, 2900.0]),
        CheckResult("load.seed-100x5.box", "seed-100x5: the box", Stage.LOAD, Status.WARN, target="outside < 20 %",
                    value=48.0, unit="%", measured="outside 48 %, steal 0.2 %",
                    detail="box contended: processes outside the stack and the harness took 48 % of 2 cores"),
    ])
    results = {r.id: r for r in rb.results}
    assert results["load.seed-100x5.p95"].status is Status.WARN  # 88 % of its target: 12 % headroom
    assert "passed with 12 % headroom" in results["load.seed-100x5.p95"].detail
    rb.gate()  # indeterminate and warnings pass the runbook ...
    verdict = verdict_of(rb.run.path)  # ... but not the run
    reason = next(r for r in verdict.reasons if "seed-20x2" in r)
    assert reason == ("check load.seed-20x2.p95 indeterminate (target p95<70s, measured 17300.0 ms, 95 % interval "
                      "16100.0 ms – ∞): about 52 more request(s) would decide it (72 in all; the scenario's budget is 100)")
    html = write_report(rb.run.path).read_text()
    key = html[html.index('id="key-figures"'):html.index('id="box"')]
    assert "16100.0 ms – ∞" in key and "88 %" in key and "about 52 more request(s)" in key and ">INDETERMINATE<" in key
    assert "48 % of 2 cores" in html[html.index('id="box"'):]
    assert "more requests decide it (<code>-p requests=N</code>" in html  # the next step beside the undecided gate
    from harness.remedies import next_step

    contended = results["load.seed-100x5.box"]
    contended.status, contended.caveat = Status.INDETERMINATE, "measured while the box was contended: 48 %"
    assert next_step(contended).step.startswith("It was measured while the box was contended")
    assert f".s-indeterminate {{ color: {STATUS_COLORS[Status.INDETERMINATE]}" in html
    case = junit.build(rb.run.path).getroot().find("./testsuite/testcase[@name='load.seed-20x2.p95']/failure")
    assert case.get("type") == "indeterminate" and "about 52 more" in case.get("message")

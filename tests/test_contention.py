"""Contention made visible: a real process outside the stack and the harness keeps a core busy, and
the box readings name it; our own children are ours; a load scenario measured beside it cannot PASS
and the verdict says why."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import psutil
import pytest

from harness.envcheck.contention import CpuWatch, check_contention, harness_root, our_roots
from harness.result import Status

# forks once more and exits, so the spinner is nobody's child here: an outside process, like another
# engineer's build (it stops by itself after `limit` seconds should the test die)
SPINNER = textwrap.dedent("""
    import os, sys, time
    marker, limit, pidfile = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    if os.fork():
        os._exit(0)
    os.setsid()
    with open(pidfile, "w") as fh:
        fh.write(str(os.getpid()))
    end = time.time() + limit
    while time.time() < end:
        pass
""")


@pytest.fixture
def outside_spinner(tmp_path):
    pidfile = tmp_path / "spinner.pid"
    subprocess.run([sys.executable, "-c", SPINNER, "busy-outside-marker", "120", str(pidfile)], check=True)
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline, "the spinner never started"
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    time.sleep(0.5)  # spinning
    yield pid
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_the_harness_root_is_the_top_python_process_above_us():
    root = harness_root()
    assert root in {p.pid for p in [psutil.Process(), *psutil.Process().parents()]}
    assert os.path.basename(psutil.Process(root).exe()).startswith("python")
    parent = psutil.Process(root).parent()
    assert parent is None or not os.path.basename(parent.exe()).startswith("python")


@pytest.mark.integration
def test_an_outside_busy_process_is_named_and_our_children_are_ours(outside_spinner):
    assert outside_spinner not in {c.pid for c in psutil.Process(harness_root()).children(recursive=True)}
    ours = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 4\nwhile time.time() < end: pass"])
    try:
        with CpuWatch(None, every_s=0.5) as watch:
            time.sleep(3)
        reading = watch.reading()
    finally:
        ours.kill()
        ours.wait()
    labels = " ".join(label for label, _ in reading.top)
    assert f"pid {outside_spinner}: " in labels and "busy-outside-marker" in labels, reading.describe()
    assert f"pid {ours.pid}" not in labels  # our own child is ours, however busy
    assert reading.ours_pct > 0 and reading.outside_pct >= 10, reading.describe()
    assert reading.contended and "busy-outside-marker" in reading.describe()
    assert reading.reasons()[0].startswith("processes outside the stack and the harness took ")


@pytest.mark.integration
def test_the_environment_check_warns_on_a_contended_box(outside_spinner, tmp_path):
    from suite.settings import Settings

    [result] = check_contention(Settings(data_dir=tmp_path / "data"), window_s=2)
    assert result.id == "env.cpu.contention" and result.unit == "%" and result.value >= 10
    assert result.status is Status.WARN and result.caveat and "busy-outside-marker" in result.detail
    assert "CPU benchmark:" in result.detail and "% of" in result.detail


@pytest.mark.integration
def test_a_scenario_measured_beside_a_busy_core_cannot_pass(outside_spinner, tmp_path):
    """The issue's check at the scale of one scenario: one core held busy by an outside process, a
    healthy target, and no gate passes; the verdict names the contention."""
    from harness.load import plan, run_plan
    from harness.verdict import decide
    from tests.test_load_run import _settings_for, serving

    (tmp_path / "app").mkdir()
    with serving(tmp_path / "app") as url:
        scenario = plan("code", requests=20, thresholds="p95<3000ms,fail_ratio<0.03")
        outcome = next(run_plan(scenario, _settings_for(url, tmp_path), tmp_path / "load", base=tmp_path))
    by_id = {r.id: r for r in outcome.results}
    gates = [by_id["load.code.p95"], by_id["load.code.fail_ratio"]]
    assert all(r.status is Status.INDETERMINATE for r in gates), [str(r) for r in gates]
    assert all("measured while the box was contended" in r.caveat for r in gates)
    # 20 requests cannot bound a p95 from above, but on a contended box more would only take longer
    assert outcome.run.planned == 20 and "not extended past 20: the box is contended" in by_id["load.code.run"].detail
    assert "load.code.box has the readings" in by_id["load.code.p95"].caveat
    box = by_id["load.code.box"]
    assert box.status is Status.WARN and "busy-outside-marker" in box.detail and box.value >= 10
    verdict = decide([{"notebook": "05_load.ipynb", "status": Status.PASS}], outcome.results)
    assert not verdict.go
    # the verdict says the box was contended and where the readings are; the box row names the process
    assert any("load.code.p95 indeterminate" in r and "measured while the box was contended" in r
               and "load.code.box has the readings" in r for r in verdict.reasons), verdict.reasons
    assert our_roots(None) == {harness_root()}


def test_a_quiet_reading_is_not_contended():
    from harness.envcheck.contention import Benchmark, CpuReading

    quiet = CpuReading(10, 2, steal_pct=0.3, outside_pct=3, outside_max_pct=9, ours_pct=80,
                       benchmark=Benchmark(2, 512, [0.35, 0.36], [0.35, 0.35]))
    assert not quiet.contended and "99 % of 2 core(s) available" in quiet.describe()
    stolen = replace(quiet, steal_pct=30)
    assert stolen.reasons() == ["the hypervisor stole 30 % of the CPU time"]
    slow_bench = replace(quiet, benchmark=Benchmark(2, 512, [0.7, 0.7], [0.35, 0.35]))
    assert slow_bench.reasons() == ["the CPU benchmark got 50 % of 2 core(s)"]

"""`harness run` end to end: real papermill kernels, real services, the report and its verdict."""

import hashlib
import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from harness.monitor import promtool
from suite.settings import Settings
from suite.supervisor import supervisord
from suite.testing import free_port_offset

pytestmark = pytest.mark.integration


def run_harness(tmp_path, gemma_path, *args, offset=None, timeout=1500):
    env = dict(os.environ,
               SUITE_DATA_DIR=str(tmp_path / "data"), SUITE_PORT_OFFSET=str(offset or free_port_offset()),
               SUITE_INFERENCE__CHAT__PATH=str(gemma_path), SUITE_INFERENCE__CODE__PATH=str(gemma_path))
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", "--runs-dir", str(tmp_path / "runs"), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def run_keys_left_active(tmp_path) -> list[dict]:
    """Keys minted by a run (``run_id`` set) that are still active in the stack's key store."""
    from suite.auth.keys import KeyStore

    store = KeyStore.open(tmp_path / "data" / "auth" / "keys.db")
    try:
        rows = store.list()
    finally:
        store.close()
    assert any(r["run_id"] for r in rows)  # the run did mint its keys
    return [r for r in rows if r["run_id"] and r["state"] == "active"]


STACK = ["inference-chat", "inference-code", "embedding", "memory", "gateway", "rag", "tools"]


def only_run(tmp_path):
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    return runs[0]


def test_pipeline_passes_and_writes_every_artifact(tmp_path, gemma_path):
    # the quick profile's short load scenarios keep CI lean, named one by one so the rest of the
    # pipeline is the release one (every service drilled, the alert drill, the scans); the seed
    # load scenarios are what `bash scripts/run.sh` runs
    # (and the recall row beside RAG at the quick profile's 1,000 chunks, not the release's 10,000)
    proc = run_harness(tmp_path, gemma_path, "-p", "scenarios=code,chat,rag,embedding,tools", "-p", "recall_chunks=1000",
                       "--junit", str(tmp_path / "junit.xml"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = only_run(tmp_path)
    assert f"report: {run / 'report.html'}" in proc.stdout and "verdict: GO" in proc.stdout
    assert "without encryption" not in proc.stderr  # kernels over IPC
    assert " failed, p95 " in proc.stdout and ", ETA " in proc.stdout  # live load progress
    cases = ET.parse(tmp_path / "junit.xml").getroot().findall("./testsuite/testcase")
    assert len(cases) == sum(len(json.loads(p.read_text())) for p in (run / "results").glob("*.json"))
    steps = json.loads((run / "steps.json").read_text())
    assert [s["status"] for s in steps] == ["pass"] * len(steps)
    for s in steps:
        assert (run / s["output"]).is_file() and (run / s["html"]).is_file()
    health = json.loads((run / "results" / "02_health.json").read_text())
    assert {r["id"] for r in health} >= {"health.gateway.ready", "health.inference-chat.ready"}
    probes = [r for r in health if r["id"].startswith("health.")]
    assert all(r["status"] == "pass" and r["unit"] == "ms" and r["value"] > 0 for r in probes)
    # the offload gate: 0 layers requested on the cpu profile, 0 placed; GPU memory is a skip
    gpu = {r["id"]: r for r in health if r["id"].startswith("gpu.")}
    assert gpu["gpu.inference-chat.layers"]["status"] == "pass" and gpu["gpu.inference-code.memory"]["status"] == "skip"
    assert {"health.rag.ready", "health.tools.ready", "health.memory.ready"} <= {r["id"] for r in health}
    smoke = json.loads((run / "results" / "03_smoke.json").read_text())
    assert not [r["id"] for r in smoke if r["status"] != "pass"]  # phase 3: nothing skipped
    load = json.loads((run / "results" / "05_load.json").read_text())
    assert {"load.rag.p95", "load.tools.p95", "load.chat.ttft_p95"} <= {r["id"] for r in load}
    itl = next(r for r in load if r["id"] == "load.chat.itl_p95")
    assert itl["status"] == "info" and itl["unit"] == "ms" and itl["value"] > 0  # shown, not a gate
    drill = {r["id"]: r for r in json.loads((run / "results" / "06_fault_drill.json").read_text())}
    assert sorted(drill) == sorted(f"fault.{name}" for name in STACK)  # every service killed once
    assert {k: r["status"] for k, r in drill.items()} == dict.fromkeys(drill, "pass"), drill
    assert (run / "figures" / "fault_drill_timeline.svg").is_file()
    durability = {r["id"]: r for r in json.loads((run / "results" / "06b_durability.json").read_text())}
    assert {k: r["status"] for k, r in durability.items()} == dict.fromkeys(durability, "pass"), durability
    assert {"durability.memory", "durability.rag", "durability.tools.approvals", "durability.sqlite"} <= set(durability)
    assert all(durability[k]["value"] == 0 for k in ("durability.memory", "durability.rag", "durability.tools.audit"))
    assert json.loads((run / "faults" / "durability.json").read_text())["kills"]  # the seed's kills, recorded
    backup = {r["id"]: r for r in json.loads((run / "results" / "07_backup.json").read_text())}
    assert {"backup.create", "backup.drill.counts", "backup.drill.tamper", "backup.rto", "backup.retention"} <= set(backup)
    manifest_copy = next((run / "backups").glob("*.manifest.json"))  # every file still matches its sha256
    set_dir = tmp_path / "data" / "backups" / json.loads(manifest_copy.read_text())["set"]
    for f in json.loads(manifest_copy.read_text())["files"]:
        assert hashlib.sha256((set_dir / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    monitoring = {r["id"]: r for r in json.loads((run / "results" / "08_monitoring.json").read_text())}
    if promtool.missing("prometheus", "promtool", "alertmanager"):
        assert monitoring["monitor.stack"]["status"] == "skip"  # with the install hint, never a pass
    else:  # every target UP, PromQL per service, the alert path both ways
        checked = ("monitor.rules.test", "monitor.targets", "monitor.promql.rag", "monitor.alert.fires",
                   "monitor.alert.resolves")
        assert {k: monitoring[k]["status"] for k in checked} == dict.fromkeys(checked, "pass")
        assert monitoring["monitor.targets"]["measured"].startswith("7/7 UP")
    assert monitoring["monitor.logs"]["status"] in ("pass", "warn")
    report = (run / "report.html").read_text()
    assert ">GO<" in report and "health.gateway.ready" in report and "02_health.html" in report
    assert "kill -9 embedding under load" in report
    assert "backup.rto" in report and "backup.set.rag" in report
    ledger = json.loads((run / "ledger.json").read_text())
    assert "report.html" in ledger["artifacts"] and ledger["environment"]["packages"]["llama-cpp-python"]
    # services this run started are gone again
    started = json.loads((run / "started_services.json").read_text())
    assert started["services"] == STACK
    assert supervisord.connect(Settings(data_dir=tmp_path / "data")) is None  # the supervisor went too
    assert run_keys_left_active(tmp_path) == []  # keys minted by the run are the run's: revoked at its end
    # the HTML rendering for reviewers carries no code cells
    html = (run / steps[0]["html"]).read_text()
    assert "from harness.envcheck import validate" not in html and "env.python" in html


def test_failing_check_stops_the_run_but_leaves_notebooks_results_and_report(tmp_path, gemma_path):
    offset = free_port_offset()
    with socket.socket() as blocker:  # a stranger holds the gateway's port
        blocker.bind(("127.0.0.1", 8000 + offset))
        blocker.listen()
        proc = run_harness(tmp_path, gemma_path, offset=offset, timeout=600)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "verdict: NO-GO" in proc.stdout
    run = only_run(tmp_path)
    steps = {s["notebook"]: s for s in json.loads((run / "steps.json").read_text())}
    assert steps["00_validate_env.ipynb"]["status"] == "fail"
    assert "env.ports" in steps["00_validate_env.ipynb"]["error"]
    assert steps["01_bring_up.ipynb"]["status"] == "skip"
    assert steps["09_report.ipynb"]["status"] == "pass"
    assert (run / "notebooks" / "00_validate_env.ipynb").is_file()
    results = json.loads((run / "results" / "00_validate_env.json").read_text())
    ports = next(r for r in results if r["id"] == "env.ports")
    assert ports["status"] == "fail" and str(8000 + offset) in ports["detail"]
    report = (run / "report.html").read_text()
    assert "NO-GO" in report and "env.ports" in report
    assert run_keys_left_active(tmp_path) == []  # revoked when the run ends, failed or not


def test_wrong_parameter_type_is_refused_before_anything_runs(tmp_path, gemma_path):
    proc = run_harness(tmp_path, gemma_path, "-p", "phase=two", timeout=120)
    assert proc.returncode == 2
    assert "parameter 'phase'" in proc.stderr and "expects int" in proc.stderr
    assert not (tmp_path / "runs").exists()

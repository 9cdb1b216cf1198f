"""A next step beside every failure: every check kind the harness writes has its own row in the remedies
table, the runbook sections the rows point at exist, and a port held by another process — injected for
real, through the real environment runbook — ends in a report and JUnit file whose hint names the
holder and the fix, and following it fixes the run."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from harness import remedies
from harness.result import CheckResult, Stage, Status
from suite.net import free_port
from suite.settings import Settings, project_root
from tests.test_sequence import _env, harness

PREFIXES = ("env", "gpu", "bringup", "health", "smoke", "security", "load", "fault", "backup", "monitor")
_ID = re.compile(rf"({'|'.join(PREFIXES)})\.[\w.\-\[\]+]+")


def written_ids() -> set[str]:
    """Every check id the harness's code can write: string literals and f-strings (placeholders as x)."""
    ids = set()
    for path in (project_root() / "harness").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
            else:
                continue
            if _ID.fullmatch(text) and not text.endswith((".html", ".json", ".py", ".j2")):
                ids.add(text)
            if path.name == "review.py" and isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_result" \
                    and isinstance(node.args[0], ast.Constant):
                ids.add(f"security.config.{node.args[0].value}")
    # health.{name}.{kind}: the kind is health or ready (harness/health.py)
    ids.discard("health.x.x")
    ids |= {"health.s.health", "health.s.ready"}
    # the load thresholds' ids are built from the metric: one of each kind
    ids |= {f"load.s.{m}" for m in ("p95", "p50", "max", "fail_ratio", "rps", "ttft_p95", "itl_p95", "tps_p50",
                                    "attainment", "goodput",
                                    "run", "server", "gpu_memory")}
    return ids


@pytest.mark.integration
def test_every_check_kind_the_harness_writes_has_its_own_next_step():
    ids = written_ids()
    assert len(ids) > 60 and {"env.ports", "security.config.auth", "smoke.gateway.failover"} <= ids
    generic = sorted(cid for cid in ids if remedies.remedy_for(cid)[0] == "*")
    assert not generic, f"check kinds without a row in harness/remedies.py: {generic}"


def test_remedies_only_name_parts_a_check_has_and_sections_that_exist():
    fields = {"id", "name", "detail", "target", "measured"}
    for pattern, remedy in remedies.REMEDIES:
        assert set(re.findall(r"\{(\w+)\}", remedy.step)) <= fields, pattern
        if not remedy.runbook:
            continue
        stem, _, section = remedy.runbook.partition("#")
        notebook = project_root() / "runbooks" / f"{stem}.ipynb"
        assert notebook.is_file(), pattern
        headings = {line.lstrip("#").strip() for cell in nbformat.read(notebook, as_version=4).cells
                    if cell.cell_type == "markdown" for line in cell.source.splitlines() if line.startswith("#")}
        assert not section or section in headings, (pattern, section, headings)
        if section:
            assert remedy.runbook_href == f"notebooks/{stem}.html#{section.replace(' ', '-')}"


def test_a_failed_p95_points_at_the_server_side_view_and_slot_sizing():
    r = CheckResult("load.seed-50x3.p95", "p95", Stage.LOAD, Status.FAIL, target="p95<30000ms", value=31000.0,
                    unit="ms")
    step = remedies.next_step(r)
    assert step.runbook == "05_load#Server-side view beside the client" and step.doc == "README.md § Sizing slots"
    assert "load/seed-50x3/samples.jsonl" in step.step and "inference.slots" in step.step
    readme = (project_root() / "README.md").read_text()
    assert "**Sizing slots.**" in readme and "server-side view" in readme
    assert remedies.next_step(CheckResult("load.x.p95", "p95", Stage.LOAD, Status.PASS)) is None


def _hold(port: int) -> subprocess.Popen:
    """Another process listening on ``port`` (not ours, not a suite service)."""
    code = ("import socket, sys, time\ns = socket.create_server(('127.0.0.1', int(sys.argv[1])))\n"
            "print('listening', flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"
    return proc


@pytest.fixture
def env_book(tmp_path) -> Path:
    """The real environment runbook and the real report runbook, as a sequence of their own."""
    book = tmp_path / "book"
    book.mkdir()
    for name in ("00_validate_env.ipynb", "09_report.ipynb"):
        shutil.copy(project_root() / "runbooks" / name, book / name)
    (book / "sequence.yaml").write_text("name: env\nrunbooks:\n  - 00_validate_env.ipynb\n"
                                       "  - notebook: 09_report.ipynb\n    report: true\n")
    return book / "sequence.yaml"


@pytest.mark.integration
def test_a_port_held_by_another_process_ends_in_a_hint_that_leads_to_the_fix(tmp_path, env_book):
    env = _env(tmp_path)
    gateway = Settings(port_offset=int(env["SUITE_PORT_OFFSET"])).port("gateway")
    holder = _hold(gateway)
    try:
        args = ["run", str(env_book), "--runs-dir", str(tmp_path / "runs"), "-p", "phase=1", "-p", "min_disk_gb=0.01"]
        first = harness(tmp_path, *args, "--junit", str(tmp_path / "j.xml"), env=env)
        assert first.returncode == 1, first.stdout + first.stderr
        held = f"{gateway} for gateway held by pid {holder.pid} (python"
        # the terminal: the reason, then the next step naming the holder and both ways out
        lines = first.stdout.splitlines()
        i = next(n for n, line in enumerate(lines) if "check env.ports failed" in line)
        assert lines[i + 1].strip().startswith("next: Held: " + held)
        assert "`suite down`" in lines[i + 1] and "SUITE_PORT_OFFSET=1000 harness run" in lines[i + 1]
        [run_dir] = sorted((tmp_path / "runs").iterdir())
        report = (run_dir / "report.html").read_text()
        verdict = report[report.index('id="verdict"'):report.index("</section>")]
        assert "check env.ports failed" in verdict and held in verdict and "<code>suite down</code>" in verdict
        row = report[report.index("<code>env.ports</code>"):]
        row = row[:row.index("</tr>")]
        assert held in row and "next:</b> Held:" in row and "SUITE_PORT_OFFSET" in row
        assert 'href="notebooks/00_validate_env.html"' in row and (run_dir / "notebooks" / "00_validate_env.html").is_file()
        failure = ET.parse(tmp_path / "j.xml").getroot().find(".//testcase[@name='env.ports']/failure")
        assert held in failure.get("message") and "suite down" in failure.text
    finally:
        holder.terminate()
        holder.wait(10)
    # the hint's first way out: the holder stopped, the run resumed
    again = harness(tmp_path, "resume", run_dir.name, "--runs-dir", str(tmp_path / "runs"), env=env)
    assert "check env.ports failed" not in again.stdout, again.stdout
    ports = next(r for r in json.loads((run_dir / "results" / "00_validate_env.json").read_text())
                 if r["id"] == "env.ports")
    assert ports["status"] == "pass" and free_port() > 0

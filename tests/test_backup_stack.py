"""Backups of a real phase-3 stack: taken while a writer runs, restored and checked with sqlite3 and
qdrant-edge-py directly, rolled back live, and a rollback whose services fail health returns to the
safety backup by itself."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest
import qdrant_edge as qe

from harness import backup
from harness.result import Status
from suite.backup.sets import new_set_id, sha256_file
from suite.testing import auth, run_cli

pytestmark = pytest.mark.integration

DATA = json.loads((Path(__file__).parents[1] / "runbooks" / "data" / "smoke_docs.json").read_text("utf-8"))


def cli_json(settings, *argv, timeout=900):
    proc = run_cli(settings, *argv, "--json", timeout=timeout)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr


def notes(settings) -> int:
    return httpx.get(settings.url("memory") + "/v1/memory/health", timeout=30, headers=auth(settings)).json()["notes"]


def points(settings) -> dict[str, int]:
    listed = httpx.get(settings.url("rag") + "/collections", timeout=30, headers=auth(settings)).json()["collections"]
    return {c["name"]: c["points"] for c in listed}


@pytest.fixture(scope="module")
def stack(phase3):
    r = httpx.post(phase3.url("rag") + "/index", json={"collection": "smoke", "documents": DATA["documents"]},
                   timeout=300, headers=auth(phase3))
    assert r.status_code == 200, r.text
    for i in range(5):
        httpx.post(phase3.url("memory") + "/v1/memory/notes", json={"project": "p", "text": f"smoke note {i}"},
                   headers=auth(phase3)).raise_for_status()
    return phase3


def test_a_backup_taken_under_writes_restores_to_its_manifest(stack, tmp_path):
    results, set_path = backup.check_backup_under_writes(stack, 3, tmp_path / "evidence", writer_s=2.0)
    assert set_path is not None and all(r.status is not Status.FAIL for r in results), results
    manifest = json.loads((set_path / "manifest.json").read_text())
    assert {"rag", "memory", "tools"} <= set(manifest["parts"])
    assert manifest["parts"]["rag"]["collections"]["backup_writer"]["points"] > 0  # the writer's documents
    assert backup.check_verify(set_path).status is Status.PASS
    drill = backup.check_restore_drill(stack, set_path, tmp_path / "drill")
    assert [r.status for r in drill] == [Status.PASS] * 4, drill
    assert backup.check_tampered_set_refused(stack, set_path).status is Status.PASS

    # and once more by hand, with sqlite3 and qdrant-edge-py only
    scratch = tmp_path / "scratch"
    assert run_cli(stack, "restore", set_path.name, "--into", str(scratch), timeout=600).returncode == 0
    for part in ("memory", "tools"):
        entry = manifest["parts"][part]
        with sqlite3.connect(scratch / part / Path(entry["file"]).name) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            for table, rows in entry["tables"].items():
                assert conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0] == rows
    for name, entry in manifest["parts"]["rag"]["collections"].items():
        fresh = tmp_path / f"unpacked-{name}"
        qe.EdgeShard.unpack_snapshot(str(set_path / entry["snapshot"]), str(fresh))
        for shard_dir in (fresh, scratch / "edge" / name / "shard"):
            shard = qe.EdgeShard.load(str(shard_dir))
            assert shard.count(qe.CountRequest(exact=True)) == entry["points"]
            shard.close()


def test_rollback_restores_the_set_and_measures_rto_and_rpo(stack):
    rc, created, err = cli_json(stack, "backup", "create")
    assert rc == 0, err
    manifest = created["manifest"]
    httpx.post(stack.url("memory") + "/v1/memory/notes", json={"project": "p", "text": "written after the set"},
               headers=auth(stack)).raise_for_status()
    assert notes(stack) == manifest["parts"]["memory"]["tables"]["notes"] + 1
    rc, out, err = cli_json(stack, "restore", created["set"], timeout=1200)
    assert rc == 0 and out["outcome"] == "restored", err
    assert out["rto_s"] > 0 and out["rpo_s"] >= 0 and out["safety_set"].endswith(tuple("0123456789abcdef"))
    assert notes(stack) == manifest["parts"]["memory"]["tables"]["notes"]  # the later note is gone
    assert points(stack) == {n: c["points"] for n, c in manifest["parts"]["rag"]["collections"].items()}


def test_a_rollback_whose_services_fail_health_returns_to_the_safety_backup(stack, tmp_path):
    rc, created, err = cli_json(stack, "backup", "create")
    assert rc == 0, err
    good = Path(created["path"])
    # a set that verifies (its manifest matches its files) but whose memory.db the service cannot open
    broken = good.parent / new_set_id("manual")
    shutil.copytree(good, broken)
    db = broken / "memory" / "memory.db"
    db.unlink()
    with sqlite3.connect(db) as conn:
        conn.executescript("CREATE TABLE projects (id INTEGER PRIMARY KEY, name TEXT);"
                           "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT);")
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["set"] = broken.name
    manifest["parts"]["memory"]["tables"] = {"notes": 0, "projects": 0}
    for f in manifest["files"]:
        if f["path"] == "memory/memory.db":
            f.update(size=db.stat().st_size, sha256=sha256_file(db))
    (broken / "manifest.json").write_text(json.dumps(manifest))
    before_notes, before_points = notes(stack), points(stack)

    proc = run_cli(stack, "restore", broken.name, "--json", timeout=1200)
    out = json.loads(proc.stdout)
    assert proc.returncode == 1 and out["outcome"] == "returned_to_safety"
    assert "RETURNING TO THE SAFETY BACKUP" in proc.stderr and "memory" in out["error"]
    assert notes(stack) == before_notes and points(stack) == before_points  # the data from before
    for name in ("rag", "memory", "tools"):
        assert httpx.get(stack.url(name) + "/ready", timeout=30).status_code == 200

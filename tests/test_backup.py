"""Backup sets without a running stack: manifest, verification, restore drill, tampering, retention,
copies taken under concurrent writes. Restored data is checked with sqlite3 and qdrant-edge-py
directly, not through the project's code."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from suite import cli
from suite.backup.runner import create_set, restore_set, vector_part
from suite.backup.sets import SetRefused, clean_partials, prune, sha256_file, verify_set
from suite.backup.sqlite import copy_database
from suite.backup.vectors import restore_vectors
from suite.memory.service import db_path
from suite.memory.store import MemoryStore
from suite.settings import Settings
from suite.tools.audit import AuditRecord
from suite.tools.stores import open_stores, security_db_path
from suite.vectorstore import EdgeStore, EmbeddedQdrantStore, Point, open_store

DIM = 8


def pts(doc: str, n: int, seed: int) -> list[Point]:
    rng = np.random.default_rng(seed)
    return [Point(doc, i, f"{doc} {i}", rng.standard_normal(DIM).tolist(), {"lang": "ko"}) for i in range(n)]


@pytest.fixture
def suite_data(tmp_path, monkeypatch) -> Settings:
    """A data dir with every store the suite keeps: edge vectors, memory.db, security.db."""
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SUITE_PORT_OFFSET", "41000")  # nothing listens there: the rag part is taken directly
    settings = Settings()
    store = open_store(settings)
    store.ensure_collection("docs", DIM)
    for d in range(5):
        store.replace_document("docs", f"d{d}", pts(f"d{d}", 4, d))
    store.close()
    memory = MemoryStore(db_path(settings))
    for i in range(12):
        memory.add_note("proj", f"note number {i} about snapshots", ["t"])
    memory.close()
    tools = open_stores(settings)  # keys live in the key store (auth/keys.db); the tools database holds
    tools.audit.write(AuditRecord(transport="cli", tool="backup-test", decision="allowed", outcome="success",
                                  status=200))  # approvals and the audit
    tools.keys.create("admin", "backup-test")
    tools.close()
    return settings


def counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("projects", "notes")}


def test_a_set_has_every_store_and_a_manifest_that_matches_its_files(suite_data):
    path = create_set(suite_data, progress=lambda _m: None)
    manifest = json.loads((path / "manifest.json").read_text())
    assert not list(suite_data.backup_dir.glob("*.partial"))
    assert {f["path"] for f in manifest["files"]} == {
        "rag/docs.snapshot", "rag/docs.points.jsonl.gz", "rag/docs.config.json", "memory/memory.db",
        "tools/security.db", "auth/keys.db"}
    for f in manifest["files"]:
        assert (path / f["path"]).stat().st_size == f["size"] and sha256_file(path / f["path"]) == f["sha256"]
    assert manifest["parts"]["rag"]["collections"]["docs"]["points"] == 20
    assert manifest["parts"]["memory"]["tables"]["notes"] == 12 and manifest["parts"]["memory"]["integrity"] == "ok"
    assert manifest["parts"]["auth"]["tables"]["api_keys"] == 1 and manifest["parts"]["tools"]["tables"]["audit"] == 1
    assert manifest["source"]["suite_version"] and manifest["parts"]["rag"]["service"] == "rag"
    for db in path.rglob("*.db"):  # copies of notes, approvals and the audit are as private as their source
        assert db.stat().st_mode & 0o777 == 0o600, db
    assert manifest["created_at"] and manifest["bytes"] == sum(f["size"] for f in manifest["files"])


def test_restore_drill_into_scratch_reproduces_the_manifest(suite_data, tmp_path):
    path = create_set(suite_data, progress=lambda _m: None)
    manifest = verify_set(path)
    scratch = tmp_path / "scratch"
    assert cli.main(["restore", path.name, "--into", str(scratch), "--json"]) == 0
    assert counts(scratch / "memory" / "memory.db") == {"projects": 1, "notes": 12}
    with sqlite3.connect(scratch / "memory" / "memory.db") as conn:  # the memory search works on the copy
        assert conn.execute("SELECT COUNT(*) FROM notes_fts WHERE notes_fts MATCH 'snapshots'").fetchone()[0] == 12
    with sqlite3.connect(scratch / "auth" / "keys.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0] == 1
    with sqlite3.connect(scratch / "tools" / "security.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 1
    shard = qe.EdgeShard.load(str(scratch / "edge" / "docs" / "shard"))
    try:
        assert shard.count(qe.CountRequest(exact=True)) == manifest["parts"]["rag"]["collections"]["docs"]["points"]
        probe = pts("d3", 4, 3)[2]
        hit = shard.query(qe.QueryRequest(limit=1, query=qe.Query.Nearest(probe.vector), with_payload=True))[0]
        assert (hit.payload["doc_id"], hit.payload["chunk_no"]) == ("d3", 2)
    finally:
        shard.close()


@pytest.mark.parametrize("victim", ["rag/docs.snapshot", "rag/docs.points.jsonl.gz", "memory/memory.db",
                                    "tools/security.db", "auth/keys.db"])
def test_one_flipped_byte_refuses_the_whole_set(suite_data, tmp_path, victim):
    path = create_set(suite_data, progress=lambda _m: None)
    target = path / victim
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(SetRefused, match=victim):
        verify_set(path)
    scratch = tmp_path / "scratch"
    assert cli.main(["restore", path.name, "--into", str(scratch)]) == 2
    assert not scratch.exists()  # never half-restored
    with pytest.raises(SetRefused):
        restore_set(suite_data, path, into=None)  # nor over the live data
    assert counts(db_path(suite_data))["notes"] == 12


def test_truncated_missing_or_extra_files_refuse_the_set(suite_data):
    path = create_set(suite_data, progress=lambda _m: None)
    (path / "memory" / "memory.db").write_bytes((path / "memory" / "memory.db").read_bytes()[:-10])
    (path / "rag" / "docs.config.json").unlink()
    (path / "rag" / "smuggled.db").write_bytes(b"x")
    with pytest.raises(SetRefused) as refused:
        verify_set(path)
    text = " ".join(refused.value.problems)
    assert "memory/memory.db" in text and "docs.config.json: missing" in text and "smuggled.db: not in" in text


def test_retention_keeps_exactly_the_newest_n_and_the_young(tmp_path):
    root = tmp_path / "backups"
    now = time.time()
    ages_days = {"20260101T000000Z-manual-0001": 30, "20260102T000000Z-manual-0002": 20,
                 "20260103T000000Z-manual-0003": 10, "20260104T000000Z-manual-0004": 2,
                 "20260105T000000Z-manual-0005": 1, "20260106T000000Z-manual-0006": 0.5}
    for name, age in ages_days.items():
        (root / name).mkdir(parents=True)
        (root / name / "manifest.json").write_text(json.dumps({"files": [], "created_ts": now - age * 86400}))
    (root / "20260107T000000Z-manual-0007.partial").mkdir()  # unfinished: not a set, never counted
    plan = prune(root, keep_last=2, keep_days=3, now=now, dry_run=True)
    assert plan["kept"] == ["20260104T000000Z-manual-0004", "20260105T000000Z-manual-0005",
                            "20260106T000000Z-manual-0006"]
    assert sorted(p.name for p in root.iterdir()) == sorted([*ages_days, "20260107T000000Z-manual-0007.partial"])
    prune(root, keep_last=4, keep_days=0, now=now)  # count alone
    assert sorted(p.name for p in root.iterdir() if "partial" not in p.name) == sorted(list(ages_days)[2:])
    assert clean_partials(root, max_age_s=3600, now=now) == []  # young leftover: maybe still being written
    assert clean_partials(root, max_age_s=3600, now=now + 7200) == ["20260107T000000Z-manual-0007.partial"]


@pytest.mark.integration
def test_copies_taken_during_concurrent_writes_hold_exactly_their_counts(tmp_path):
    """A writer keeps inserting notes and indexing documents while the copies are taken; each copy is
    one consistent state and its counts (in the part) are what a restore reproduces."""
    store = EdgeStore(tmp_path / "edge")
    store.ensure_collection("live", DIM)
    memory = MemoryStore(tmp_path / "memory.db")
    stop = threading.Event()
    written = {"notes": 0, "docs": 0}

    def writer():
        while not stop.is_set():
            memory.add_note("p", f"note {written['notes']}", [])
            written["notes"] += 1
            store.replace_document("live", f"doc{written['docs']}", pts(f"doc{written['docs']}", 3, written["docs"]))
            written["docs"] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        part = vector_part(store, tmp_path / "set" / "rag")
        db = copy_database(tmp_path / "memory.db", tmp_path / "set" / "memory" / "memory.db")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
    points = part["collections"]["live"]["points"]
    assert 0 < points < written["docs"] * 3 and 0 < db["tables"]["notes"] < written["notes"]
    target = EdgeStore(tmp_path / "restored")
    restore_vectors(target, tmp_path / "set", part)
    assert target.count("live") == points
    target.close()
    qe.EdgeShard.unpack_snapshot(str(tmp_path / "set" / "rag" / "live.snapshot"), str(tmp_path / "direct"))
    shard = qe.EdgeShard.load(str(tmp_path / "direct"))
    assert shard.count(qe.CountRequest(exact=True)) == points
    shard.close()
    assert counts(tmp_path / "set" / "memory" / "memory.db")["notes"] == db["tables"]["notes"]
    store.close()
    memory.close()


def test_the_portable_export_restores_into_the_other_kind_of_store(tmp_path):
    edge = EdgeStore(tmp_path / "edge")
    edge.ensure_collection("docs", DIM)
    for d in range(4):
        edge.replace_document("docs", f"d{d}", pts(f"d{d}", 5, d))
    part = vector_part(edge, tmp_path / "set" / "rag")
    probe = pts("d2", 5, 2)[4].vector
    expected = [(h.doc_id, h.chunk_no) for h in edge.search("docs", probe, 3)]
    edge.close()
    local = EmbeddedQdrantStore(tmp_path / "local")  # qdrant-client local mode: no snapshot, the export
    out = restore_vectors(local, tmp_path / "set", part)
    assert out["docs"] == {"points": 20, "from": "portable export"}
    assert [(h.doc_id, h.chunk_no) for h in local.search("docs", probe, 3)] == expected
    with sqlite3.connect(tmp_path / "local" / "collection" / "docs" / "storage.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM points").fetchone()[0] == 20  # checked without our code
    local.close()


def test_restore_refuses_a_non_empty_scratch_folder(suite_data, tmp_path):
    path = create_set(suite_data, progress=lambda _m: None)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert cli.main(["restore", path.name, "--into", str(tmp_path / "busy")]) == 2
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_security_db_path_is_what_the_set_copies(suite_data):
    assert security_db_path(suite_data).is_file()
    path = create_set(suite_data, progress=lambda _m: None)
    assert verify_set(path)["parts"]["tools"]["source"] == str(security_db_path(suite_data))


def test_a_server_shard_snapshot_restores_into_an_edge_store_and_back(tmp_path):
    """Server → edge through the shard snapshot (one format), edge → server through the portable export."""
    import os
    import uuid

    from suite.vectorstore import ServerQdrantStore

    url = os.environ.get("QDRANT_URL")
    if not url:
        pytest.skip("no Qdrant server: set QDRANT_URL (e.g. http://127.0.0.1:6333) to run this")
    server = ServerQdrantStore(url)
    name = f"t_{uuid.uuid4().hex[:8]}"
    try:
        server.ensure_collection(name, DIM)
        for d in range(3):
            server.replace_document(name, f"d{d}", pts(f"d{d}", 4, d))
        part = vector_part(server, tmp_path / "set" / "rag")
        entry = part["collections"][name]
        assert entry["snapshot_format"] == "server-shard" and entry["points"] == 12
        qe.EdgeShard.unpack_snapshot(str(tmp_path / "set" / entry["snapshot"]), str(tmp_path / "shard"))
        shard = qe.EdgeShard.load(str(tmp_path / "shard"))
        assert shard.count(qe.CountRequest(exact=True)) == 12
        shard.close()
        edge = EdgeStore(tmp_path / "edge")
        assert restore_vectors(edge, tmp_path / "set", part)[name]["points"] == 12
        back = vector_part(edge, tmp_path / "back" / "rag")
        edge.close()
        server.drop_collection(name)
        out = restore_vectors(server, tmp_path / "back", back)
        assert out[name] == {"points": 12, "from": "portable export"}
    finally:
        if server.has_collection(name):
            server.drop_collection(name)
        server.close()


def test_the_runbook_rolls_back_only_a_stack_its_run_started():
    from harness.backup import rollback_decision
    from harness.result import Status

    assert rollback_decision("auto", ["rag", "memory", "tools", "gateway"], 3) is None
    refused = rollback_decision("auto", ["rag"], 3)  # memory and tools belong to someone else
    assert refused.status is Status.SKIP and "memory, tools" in refused.detail and "rollback=true" in refused.detail
    assert rollback_decision("auto", ["rag"], 2) is None  # phase 2: rag is all a rollback touches
    assert rollback_decision("true", [], 3) is None
    assert rollback_decision("false", ["rag", "memory", "tools"], 3).status is Status.SKIP
    with pytest.raises(ValueError):
        rollback_decision("yes", [], 3)


def test_sets_and_restores_are_private_whatever_the_umask(suite_data, tmp_path):
    """A second run's security review failed once: `suite backup create` ran with umask 022 and left
    data/backups and every set folder 0755, readable by any local user."""
    from harness.result import Status
    from harness.security.review import check_file_modes

    suite_data.backup_dir.mkdir(parents=True, mode=0o755)
    suite_data.backup_dir.chmod(0o755)  # as an older version left it
    old = os.umask(0o022)
    try:
        path = create_set(suite_data, progress=lambda _m: None)
        scratch = tmp_path / "scratch"
        restore_set(suite_data, path, into=scratch, progress=lambda _m: None)
    finally:
        os.umask(old)
    for folder in (suite_data.backup_dir, path, *(p for p in path.rglob("*") if p.is_dir()), scratch):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    for f in path.rglob("*"):
        if f.is_file():
            assert f.stat().st_mode & 0o077 == 0, f
    assert check_file_modes(suite_data).status is Status.PASS, check_file_modes(suite_data).detail

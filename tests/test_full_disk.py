"""A full disk, for real: the data dir is a size-limited tmpfs, filled with a file. Writes are refused
with 507 and the reason (never a 500 traceback, never a crash: Qdrant Edge's mmap'd WAL would SIGBUS),
reads keep working, ``/health`` says why, nothing on disk is corrupted, ``suite backup create`` refuses
to start when the set will not fit and never leaves a half set, and every write works again once the
space is freed — same processes, no restart."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from suite.backup import runner
from suite.backup.sets import BackupError, list_sets
from suite.memory.store import MemoryStore
from suite.settings import Settings
from suite.storage import SpaceGuard
from suite.testing import (
    MountRefused,
    auth,
    fill,
    serve,
    serve_processes,
    small_filesystem,
    stack_env,
    stack_settings,
)

MiB = 1 << 20
RESERVE = 48 * MiB


@pytest.fixture
def disk(tmp_path):
    try:
        with small_filesystem(tmp_path / "data", 200 * MiB) as mnt:
            yield mnt
    except MountRefused as exc:
        pytest.skip(f"no size-limited file system here: {exc}")


def post(settings, service, path, body, role="developer"):
    return httpx.post(settings.url(service) + path, json=body, headers=auth(settings, role), timeout=120)


def get(settings, service, path, role="developer", **params):
    return httpx.get(settings.url(service) + path, headers=auth(settings, role), params=params, timeout=60)


def refused_507(resp: httpx.Response) -> str:
    assert resp.status_code == 507, resp.text
    error = resp.json()["error"]
    assert error["code"] == "insufficient_storage" and resp.headers["retry-after"]
    assert "insufficient storage" in error["message"]
    return error["message"]


def backup_cli(settings) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack_env(settings), "SUITE_STORAGE__RESERVE_BYTES": str(RESERVE)}
    return subprocess.run([sys.executable, "-m", "suite.cli", "backup", "create"], capture_output=True, text=True,
                          timeout=300, env=env)


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@pytest.mark.integration
def test_a_full_data_dir_refuses_writes_keeps_reads_and_recovers_without_a_restart(disk):
    settings = stack_settings(disk, storage={"reserve_bytes": RESERVE}, memory={"maintainer_enabled": False})
    with serve_processes(settings, "embedding", "rag", "memory", "tools") as procs:
        pids = {n: p.pid for n, p in procs.items()}
        note = post(settings, "memory", "/v1/memory/notes", {"project": "disk", "text": "written before the disk filled"})
        assert note.status_code == 201
        doc = {"id": "before", "text": "a document indexed before the disk filled up. " * 40}
        assert post(settings, "rag", "/index", {"collection": "disk", "documents": [doc]}).status_code == 200
        assert post(settings, "tools", "/tools/write_file", {"path": "kept.txt", "content": "kept"},
                    role="admin").status_code == 200
        assert backup_cli(settings).returncode == 0
        sets_before = sorted(p.name for p in settings.backup_dir.iterdir())

        filler = fill(disk, leave_bytes=RESERVE // 2)  # what a runaway log does at 3 a.m.
        time.sleep(SpaceGuard(disk, 0).every_s + 0.2)  # each service reads free space at most once a second
        # writes: 507 with the reason, on every stateful service
        message = refused_507(post(settings, "memory", "/v1/memory/notes", {"project": "disk", "text": "x"}))
        assert "free of" in message and "reserve" in message
        refused_507(post(settings, "rag", "/index", {"collection": "disk", "documents": [{"id": "d2", "text": "y"}]}))
        refused_507(post(settings, "tools", "/tools/write_file", {"path": "new.txt", "content": "n"}, role="admin"))
        # reads: untouched
        assert get(settings, "memory", f"/v1/memory/notes/{note.json()['id']}").status_code == 200
        assert get(settings, "memory", "/v1/memory/search", q="filled").json()["results"]
        query = post(settings, "rag", "/query", {"collection": "disk", "query": "indexed before", "answer": False})
        assert query.status_code == 200 and query.json()["sources"][0]["doc_id"] == "before"
        assert post(settings, "tools", "/tools/read_file", {"path": "kept.txt"}, role="guest").status_code == 200
        # health: 200 (nothing to restart), and why writes are refused
        for name in ("memory", "rag", "tools"):
            health = httpx.get(settings.url(name) + "/health", timeout=30)
            assert health.status_code == 200 and health.json()["status"] == "degraded"
            assert health.json()["storage"]["writes"] == "refused" and "reserve" in health.json()["storage"]["reason"]
        # a backup that will not fit is refused before anything is written
        refused = backup_cli(settings)
        assert refused.returncode == 2 and "will not fit" in refused.stderr and "Nothing was written" in refused.stderr
        assert sorted(p.name for p in settings.backup_dir.iterdir()) == sets_before

        fill(disk, leave_bytes=0, name="filler2.bin")  # no reserve left at all: still answers, no crash
        time.sleep(SpaceGuard(disk, 0).every_s + 0.2)
        refused_507(post(settings, "rag", "/index", {"collection": "disk", "documents": [{"id": "d3", "text": "z"}]}))
        refused_507(post(settings, "memory", "/v1/memory/notes", {"project": "disk", "text": "x"}))
        assert all(p.poll() is None for p in procs.values())  # no SIGBUS, no exit

        filler.unlink()
        (disk / "filler2.bin").unlink()
        time.sleep(1.5)  # the guard reads the free space again at most every second
        assert post(settings, "memory", "/v1/memory/notes", {"project": "disk", "text": "after"}).status_code == 201
        doc2 = {"id": "after", "text": "indexed once space was freed. " * 40}
        assert post(settings, "rag", "/index", {"collection": "disk", "documents": [doc2]}).status_code == 200
        assert post(settings, "tools", "/tools/write_file", {"path": "new.txt", "content": "n"},
                    role="admin").status_code == 200
        assert httpx.get(settings.url("rag") + "/health", timeout=30).json()["storage"]["writes"] == "accepted"
        assert backup_cli(settings).returncode == 0
        assert {n: p.pid for n, p in procs.items()} == pids and all(p.poll() is None for p in procs.values())
        whole = get(settings, "rag", "/collections/disk/documents/before", text="false").json()
        assert whole["chunk_numbers"] == list(range(whole["chunks"]))
    # nothing corrupted
    for db in (settings.data_dir / "memory" / "memory.db", settings.data_dir / "tools" / "security.db",
               settings.key_store_path):
        assert integrity(db) == "ok"
    assert all("error" not in s for s in list_sets(settings.backup_dir)) and len(list_sets(settings.backup_dir)) == 2


def test_sqlite_full_is_a_507_not_a_500(disk):
    """With no reserve at all, SQLite itself meets the full disk: SQLITE_FULL becomes 507 with the reason."""
    settings = stack_settings(disk, storage={"reserve_bytes": 0}, memory={"maintainer_enabled": False})
    with serve(settings, "memory"):
        assert post(settings, "memory", "/v1/memory/notes", {"project": "p", "text": "first"}).status_code == 201
        filler = fill(disk, leave_bytes=0)
        resp = post(settings, "memory", "/v1/memory/notes", {"project": "p", "text": "x" * 90_000})
        assert "disk is full" in refused_507(resp)
        assert get(settings, "memory", "/v1/memory/notes", project="p").json()["notes"][0]["text"] == "first"
        filler.unlink()
        assert post(settings, "memory", "/v1/memory/notes", {"project": "p", "text": "again"}).status_code == 201
    assert integrity(settings.data_dir / "memory" / "memory.db") == "ok"


def test_a_backup_cut_short_by_a_full_disk_leaves_no_half_set(disk, monkeypatch):
    """The estimate can be wrong (the disk fills meanwhile): the set is then removed, nothing half-made stays."""
    settings = Settings(data_dir=disk, storage={"reserve_bytes": 0})
    store = MemoryStore(disk / "memory" / "memory.db")
    for n in range(300):
        store.add_note("p", f"note {n} " + "x" * 2000)
    store.close()
    monkeypatch.setattr(runner, "estimate_set", lambda _s: {})  # an estimate that says it fits
    fill(disk, leave_bytes=256 * 1024)
    with pytest.raises(BackupError, match="the disk filled up while set .* was written"):
        runner.create_set(settings, progress=lambda _m: None)
    assert [p.name for p in settings.backup_dir.iterdir()] == []
    shutil.rmtree(settings.backup_dir)

"""The memory service: store (FTS, retention, backup) and the running app with its maintainer."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from suite.memory.store import MemoryStore, MemoryStoreError, fts_query
from suite.testing import auth, serve, stack_settings


@pytest.fixture
def store(tmp_path):
    s = MemoryStore(tmp_path / "m.db")
    yield s
    s.close()


def test_notes_and_search(store):
    a = store.add_note("proj", "Qdrant snapshot runbook for backups", ["ops", "qdrant"])
    store.add_note("proj", "Gateway failover from chat to code")
    store.add_note("other", "qdrant again")
    hits = store.search("qdrant backups")
    assert [h["id"] for h in hits] == [a.id] and "[" in hits[0]["snippet"]
    assert len(store.search("qdrant")) == 2 and len(store.search("qdrant", project="other")) == 1
    assert [n.id for n in store.list_notes(tag="ops")] == [a.id]
    assert store.get_project("proj")["notes"] == 2


def test_search_never_breaks_on_fts_syntax(store):
    store.add_note("p", 'He said "hello" AND NOT (x OR y*) NEAR/2 z:w')
    for q in ["AND", "x OR", "NEAR(", 'hello"', "z:w", "y*", "안녕 하세요"]:
        assert fts_query(q)
        store.search(q)  # quoted words: never an sqlite3.OperationalError
    assert store.search('said "hello')[0]["text"].startswith("He said")
    with pytest.raises(MemoryStoreError) as info:
        store.search("!!! ---")
    assert info.value.status == 400


def test_bad_input_is_refused(store):
    for project, text, tags in (("bad name!", "x", None), ("p", "", None), ("p", "x", "notalist"),
                                ("p", 5, None), ("p", "x", [""])):
        with pytest.raises(MemoryStoreError) as info:
            store.add_note(project, text, tags)
        assert info.value.status == 400


def test_retention_per_project_and_backup(store, tmp_path):
    store.ensure_project("short", retention_days=1)
    old = store.add_note("short", "old note")
    store.add_note("long", "old but kept")
    with store._lock:
        store._db.execute("UPDATE notes SET created_at=?", (time.time() - 3 * 86400,))
    assert store.apply_retention(default_days=30) == {"short": 1}
    with pytest.raises(MemoryStoreError):
        store.get_note(old.id)
    store.optimize()
    dest = store.backup(tmp_path / "b" / "copy.db")
    copy = sqlite3.connect(dest)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("SELECT text FROM notes").fetchall() == [("old but kept",)]


@pytest.fixture(scope="module")
def memory(tmp_path_factory):
    settings = stack_settings(tmp_path_factory.mktemp("memory"),
                              memory={"maintain_every_s": 0.3, "backup_every_s": 0.3,
                                      "maintainer_start_delay_s": 0, "backups_kept": 2,
                                      "backups_keep_days": 0})
    with serve(settings, "memory"):
        yield settings


def test_memory_api(memory):
    http = httpx.Client(headers=auth(memory, "admin"), timeout=30)  # every route but the probes needs a key
    base = memory.url("memory") + "/v1/memory"
    health = http.get(base + "/health").json()
    assert health["status"] == "healthy" and "notes" in health
    assert http.get(memory.url("memory") + "/ready").status_code == 200
    r = http.post(base + "/notes", json={"project": "demo", "text": "remember the walrus", "tags": ["z"]})
    assert r.status_code == 201
    note = r.json()
    assert http.get(base + "/search", params={"q": "walrus"}).json()["results"][0]["id"] == note["id"]
    assert http.post(base + "/search", json={"query": "walrus", "project": "demo"}).json()["results"]
    assert http.get(f"{base}/notes/{note['id']}").json()["text"] == "remember the walrus"
    assert http.get(base + "/projects").json()["projects"][0]["name"] == "demo"
    assert http.post(base + "/projects", json={"name": "p2", "retention_days": 7}).status_code == 201
    for bad in ({"project": "x y", "text": "a"}, {"text": ""}, {"text": 5}, {}):
        r = http.post(base + "/notes", json=bad)
        assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "code"}
    assert http.get(base + "/search", params={"q": '"('}).status_code == 400
    assert http.get(f"{base}/notes/999999").status_code == 404
    assert http.delete(f"{base}/notes/{note['id']}").status_code == 200


def test_maintainer_runs_backs_up_and_counts(memory):
    http = httpx.Client(headers=auth(memory, "admin"), timeout=30)
    base = memory.url("memory")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        backups = http.get(base + "/v1/memory/admin/backups").json()["backups"]
        metrics = http.get(base + "/metrics").text
        if len(backups) == 2 and 'memory_maintenance_runs_total{job="maintain",outcome="ok"}' in metrics:
            break
        time.sleep(0.3)
    assert len(backups) == 2  # backups_kept prunes the rest
    assert 'memory_maintenance_runs_total{job="backup",outcome="ok"}' in metrics
    for b in backups:
        assert sqlite3.connect(b["path"]).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    r = http.post(base + "/v1/memory/admin/backup", json={})
    assert r.status_code == 200 and r.json()["outcome"] == "ok" and r.json()["bytes"] > 0
    health = http.get(base + "/v1/memory/health").json()
    assert health["maintainer"]["last_backup"]["outcome"] == "ok"


def test_scheduled_backups_keep_history_through_a_crash_loop(tmp_path):
    """Retention by count and age, and no start-up backup when a recent one exists."""
    import os

    from prometheus_client import CollectorRegistry

    from suite.memory.maintainer import Maintainer, MaintainerMetrics
    from suite.settings import Settings

    settings = Settings(data_dir=tmp_path, memory={"backups_kept": 2, "backups_keep_days": 3,
                                                   "backup_every_s": 3600, "maintainer_start_delay_s": 5})
    m = Maintainer(MemoryStore(tmp_path / "m.db"), settings, MaintainerMetrics(CollectorRegistry()))
    assert m.first_backup_delay_s() == 5  # nothing yet: back up soon after start
    m.backup_dir.mkdir(parents=True)
    now = time.time()
    for i, age_days in enumerate([10, 9, 2, 1]):  # two old, two within keep_days
        p = m.backup_dir / f"memory-2026010{i}T000000000Z.db"
        p.write_bytes(b"x")
        os.utime(p, (now - age_days * 86400, now - age_days * 86400))
    assert m.first_backup_delay_s() == 5  # the newest is a day old: due
    record = m._backup()
    kept = sorted(p.name for p in m.backup_dir.glob("memory-*.db"))
    # newest 2 (the new one and the 1-day-old) plus the 2-day-old (young): the 9- and 10-day-old go
    assert len(kept) == 3 and sorted(record["pruned"]) == ["memory-20260100T000000000Z.db",
                                                             "memory-20260101T000000000Z.db"]
    # a restart right after: the fresh backup counts, the next one waits for the schedule
    assert 3590 < m.first_backup_delay_s() <= 3600
    m.store.close()

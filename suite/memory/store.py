"""SQLite store of the memory service: projects, notes (text + tags + timestamps) and FTS5 search.

One connection per store, guarded by a lock: the service calls it from worker threads
(``asyncio.to_thread``) and the maintainer uses the same object, so SQLite sees one writer.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.auth.db import SYNCHRONOUS, connect_private, private_file
from suite.fsio import fsync_dir, fsync_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    retention_days REAL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    text TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS notes_project_created ON notes(project_id, created_at);
CREATE VIRTUAL TABLE IF NOT EXISTS notes_fts USING fts5(text, tags, content='notes', content_rowid='id');
CREATE TRIGGER IF NOT EXISTS notes_ai AFTER INSERT ON notes BEGIN
    INSERT INTO notes_fts(rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;
CREATE TRIGGER IF NOT EXISTS notes_ad AFTER DELETE ON notes BEGIN
    INSERT INTO notes_fts(notes_fts, rowid, text, tags) VALUES ('delete', old.id, old.text, old.tags);
END;
CREATE TRIGGER IF NOT EXISTS notes_au AFTER UPDATE ON notes BEGIN
    INSERT INTO notes_fts(notes_fts, rowid, text, tags) VALUES ('delete', old.id, old.text, old.tags);
    INSERT INTO notes_fts(rowid, text, tags) VALUES (new.id, new.text, new.tags);
END;
"""

PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
WORD = re.compile(r"\w+", re.UNICODE)


class MemoryStoreError(Exception):
    """Root of the store's errors; ``status`` is the HTTP status the service answers with."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


@dataclass
class Note:
    id: int
    project: str
    text: str
    tags: list[str]
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query that cannot be a syntax error: every word quoted, ANDed."""
    words = WORD.findall(text)
    return " ".join('"' + w.replace('"', '""') + '"' for w in words[:32])


def check_project_name(name: Any) -> str:
    if not isinstance(name, str) or not PROJECT_NAME.match(name):
        raise MemoryStoreError(400, "project name must be 1-64 characters: letters, digits, '_', '.', '-' "
                                "(starting with a letter or digit)", "invalid_project")
    return name


def check_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t) <= 64 for t in tags):
        raise MemoryStoreError(400, "tags must be a list of strings of 1-64 characters", "invalid_tags")
    return sorted(set(tags))[:32]


class MemoryStore:
    """Projects, notes and search over one SQLite file in WAL mode."""

    def __init__(self, path: Path, max_note_chars: int = 100_000) -> None:
        self.path = Path(path)
        self.max_note_chars = max_note_chars
        self._lock = threading.RLock()
        self._db = connect_private(self.path, SYNCHRONOUS["memory"])  # 0600 in a 0700 folder, WAL
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- projects -------------------------------------------------------------------------------
    def ensure_project(self, name: str, description: str = "", retention_days: float | None = None) -> dict:
        """Create the project if missing (updating description/retention when given); return it."""
        check_project_name(name)
        if retention_days is not None and (not isinstance(retention_days, (int, float)) or retention_days <= 0):
            raise MemoryStoreError(400, "retention_days must be a positive number", "invalid_retention")
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO projects(name, description, retention_days, created_at) "
                             "VALUES (?, ?, ?, ?)", (name, description or "", retention_days, time.time()))
            if description:
                self._db.execute("UPDATE projects SET description=? WHERE name=?", (description, name))
            if retention_days is not None:
                self._db.execute("UPDATE projects SET retention_days=? WHERE name=?", (retention_days, name))
            return self.get_project(name)

    def get_project(self, name: str) -> dict:
        with self._lock:
            row = self._db.execute(
                "SELECT p.*, (SELECT COUNT(*) FROM notes n WHERE n.project_id=p.id) AS notes "
                "FROM projects p WHERE p.name=?", (name,)).fetchone()
        if row is None:
            raise MemoryStoreError(404, f"project '{name}' not found", "project_not_found")
        return _project(row)

    def list_projects(self) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT p.*, (SELECT COUNT(*) FROM notes n WHERE n.project_id=p.id) AS notes "
                "FROM projects p ORDER BY p.name").fetchall()
        return [_project(r) for r in rows]

    # -- notes ----------------------------------------------------------------------------------
    def add_note(self, project: str, text: Any, tags: Any = None) -> Note:
        """Save a note in a project (created on first use)."""
        if not isinstance(text, str) or not text.strip():
            raise MemoryStoreError(400, "text must be a non-empty string", "invalid_text")
        if len(text) > self.max_note_chars:
            raise MemoryStoreError(413, f"text is {len(text)} characters; the limit is {self.max_note_chars}",
                               "note_too_large")
        tag_list = check_tags(tags)
        with self._lock:
            pid = self.ensure_project(project)["id"]
            now = time.time()
            cur = self._db.execute(
                "INSERT INTO notes(project_id, text, tags, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (pid, text, json.dumps(tag_list), now, now))
            return self.get_note(cur.lastrowid)

    def get_note(self, note_id: int) -> Note:
        with self._lock:
            row = self._db.execute(
                "SELECT n.*, p.name AS project FROM notes n JOIN projects p ON p.id=n.project_id "
                "WHERE n.id=?", (note_id,)).fetchone()
        if row is None:
            raise MemoryStoreError(404, f"note {note_id} not found", "note_not_found")
        return _note(row)

    def delete_note(self, note_id: int) -> None:
        with self._lock:
            if self._db.execute("DELETE FROM notes WHERE id=?", (note_id,)).rowcount == 0:
                raise MemoryStoreError(404, f"note {note_id} not found", "note_not_found")

    def list_notes(self, project: str | None = None, tag: str | None = None, limit: int = 50) -> list[Note]:
        where, params = _note_filters(project, tag)
        sql = ("SELECT n.*, p.name AS project FROM notes n JOIN projects p ON p.id=n.project_id WHERE 1=1"
               + where + " ORDER BY n.created_at DESC, n.id DESC LIMIT ?")
        params.append(max(1, min(int(limit), 500)))
        with self._lock:
            return [_note(r) for r in self._db.execute(sql, params).fetchall()]

    def search(self, query: str, project: str | None = None, tag: str | None = None,
               limit: int = 10) -> list[dict]:
        """Full-text search (every word must match), best first by BM25."""
        match = fts_query(query or "")
        if not match:
            raise MemoryStoreError(400, "query must contain at least one word", "invalid_query")
        sql = ("SELECT n.*, p.name AS project, bm25(notes_fts) AS score, "
               "snippet(notes_fts, 0, '[', ']', '…', 12) AS snippet "
               "FROM notes_fts JOIN notes n ON n.id=notes_fts.rowid JOIN projects p ON p.id=n.project_id "
               "WHERE notes_fts MATCH ?")
        where, params = _note_filters(project, tag)
        sql += where + " ORDER BY score LIMIT ?"
        params = [match, *params, max(1, min(int(limit), 100))]
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [dict(_note(r).to_dict(), score=round(-r["score"], 4), snippet=r["snippet"]) for r in rows]

    # -- maintenance ----------------------------------------------------------------------------
    def apply_retention(self, default_days: float, now: float | None = None) -> dict[str, int]:
        """Delete notes older than each project's retention (its own, else ``default_days``)."""
        now = time.time() if now is None else now
        deleted: dict[str, int] = {}
        with self._lock:
            for row in self._db.execute("SELECT id, name, retention_days FROM projects").fetchall():
                days = row["retention_days"] or default_days
                cur = self._db.execute("DELETE FROM notes WHERE project_id=? AND created_at < ?",
                                       (row["id"], now - days * 86400))
                if cur.rowcount:
                    deleted[row["name"]] = cur.rowcount
        return deleted

    def optimize(self, vacuum: bool = True) -> None:
        """Merge FTS segments, refresh planner statistics and (optionally) VACUUM."""
        with self._lock:
            self._db.execute("INSERT INTO notes_fts(notes_fts) VALUES ('optimize')")
            self._db.execute("PRAGMA optimize")
            if vacuum:
                self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def backup(self, dest: Path) -> Path:
        """A consistent copy through SQLite's online backup API (temp file, then rename)."""
        dest = Path(dest)
        tmp = private_file(dest.with_name(dest.name + ".partial"))  # a backup is as private as the store
        target = sqlite3.connect(tmp)
        try:
            with self._lock:
                self._db.backup(target)
        finally:
            target.close()
        fsync_file(tmp)
        tmp.replace(dest)
        fsync_dir(dest.parent)
        return dest

    def counts(self) -> dict[str, int]:
        with self._lock:
            projects = self._db.execute("SELECT COUNT(*) FROM projects").fetchone()[0]
            notes = self._db.execute("SELECT COUNT(*) FROM notes").fetchone()[0]
        return {"projects": projects, "notes": notes}

    def integrity_ok(self) -> bool:
        with self._lock:
            return self._db.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def _project(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "name": row["name"], "description": row["description"],
            "retention_days": row["retention_days"], "created_at": row["created_at"], "notes": row["notes"]}


def _note_filters(project: str | None, tag: str | None) -> tuple[str, list[Any]]:
    """``AND`` clauses (and their parameters) narrowing notes to a project and/or a tag."""
    sql, params = "", []
    if project:
        sql += " AND p.name=?"
        params.append(project)
    if tag:
        sql += " AND EXISTS (SELECT 1 FROM json_each(n.tags) WHERE value=?)"
        params.append(tag)
    return sql, params


def _note(row: sqlite3.Row) -> Note:
    return Note(id=row["id"], project=row["project"], text=row["text"], tags=json.loads(row["tags"]),
                created_at=row["created_at"], updated_at=row["updated_at"])

"""Consistent copies of a live SQLite database, checked before anyone trusts them.

``copy_database`` uses SQLite's online backup API from its own connection: in WAL mode it reads one
snapshot while the service keeps writing (writers are not blocked; the copy holds every transaction
committed before it started and none after). The copy is then checked with ``PRAGMA integrity_check``
and its rows are counted per table — the counts go into the set's manifest and are what a restore
must reproduce.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from suite.auth.db import private_file
from suite.backup.sets import BackupError
from suite.fsio import fsync_dir


def integrity(path: Path) -> str:
    """``ok``, or SQLite's first complaint."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    return "ok" if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:5])


def table_counts(path: Path) -> dict[str, int]:
    """Rows per table (FTS shadow tables left out: they follow their content table)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        fts = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE%'")}
        shadow = {n for n in names for f in fts if n.startswith(f + "_")}
        return {n: int(conn.execute(f'SELECT COUNT(*) FROM "{_ident(n)}"').fetchone()[0]) for n in names
                if n not in shadow}


def _ident(name: str) -> str:
    """A table name quoted as an SQLite identifier (a double quote inside is doubled)."""
    return name.replace('"', '""')


def copy_database(source: Path, dest: Path) -> dict[str, Any]:
    """Online backup of ``source`` into ``dest`` (via ``dest.partial``); integrity-checked and counted."""
    source, dest = Path(source), Path(dest)
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    partial = dest.with_name(dest.name + ".partial")
    partial.unlink(missing_ok=True)
    private_file(partial)  # a copy of notes, approvals and the audit: 0600 in a 0700 folder, like its source
    # read-write open: a read-only one cannot join a WAL database whose -shm is gone (service stopped)
    src = sqlite3.connect(source, timeout=30)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        target = sqlite3.connect(partial)
        try:
            src.backup(target)  # all pages in one step: one consistent snapshot
            target.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
        finally:
            target.close()
    finally:
        src.close()
    check = integrity(partial)
    if check != "ok":
        partial.unlink(missing_ok=True)
        raise BackupError(f"the copy of {source.name} fails PRAGMA integrity_check: {check}")
    counts = table_counts(partial)
    os.replace(partial, dest)
    return {"integrity": check, "tables": counts, "bytes": dest.stat().st_size}


def install_database(copy: Path, dest: Path) -> dict[str, Any]:
    """Put a verified copy in place of ``dest`` (its service stopped): staged, checked, renamed, and the
    old database's ``-wal``/``-shm`` removed (replaying an old WAL onto a restored file corrupts it)."""
    staged = dest.with_name(dest.name + ".restoring")
    staged.unlink(missing_ok=True)
    private_file(staged)
    with open(copy, "rb") as src, open(staged, "wb") as out:
        while block := src.read(1 << 20):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    check = integrity(staged)
    if check != "ok":
        staged.unlink(missing_ok=True)
        raise BackupError(f"{copy} fails PRAGMA integrity_check: {check}")
    counts = table_counts(staged)
    for suffix in ("-wal", "-shm"):
        dest.with_name(dest.name + suffix).unlink(missing_ok=True)
    os.replace(staged, dest)
    fsync_dir(dest.parent)
    return {"integrity": check, "tables": counts}

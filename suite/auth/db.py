"""SQLite files holding secrets or audit data (the key store, the tool server's approvals and audit):
WAL mode, one connection serialised by a lock, created ``0600`` in a ``0700`` folder.

Several processes share one file (every service reads the key store; ``suite keys`` writes it).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700

# ``PRAGMA synchronous`` of each suite database (all in WAL mode), and why (docs/architecture.md,
# *Durability*). FULL fsyncs the WAL at every commit: a write the client was told succeeded survives a
# power cut, not only a crashed process. NORMAL would leave the last commits before a checkpoint to
# the page cache: safe against corruption and against kill -9, not against power loss. Measured on
# this box: a committed insert costs 0.08 ms at NORMAL, 4.5-5.8 ms at FULL.
SYNCHRONOUS = {
    # a revoked key must stay revoked, a minted key must exist once it was printed; writes are rare
    "keys": "FULL",
    # approvals and audit: an approval is claimed ('executing') before its tool runs, and that claim
    # must be on disk before the side effect, or a power cut could bring back an 'approved' row that
    # runs a second time; an audit row of a served call is evidence
    "security": "FULL",
    # notes: acknowledged with 201; one fsync per note is cheap beside the HTTP round trip
    "memory": "FULL",
}


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) ``0700``; an existing folder is tightened to ``0700``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if (path.stat().st_mode & 0o777) != PRIVATE_DIR:
        os.chmod(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with mode ``0600`` if it is missing (never following a symlink there);
    tighten an existing one to ``0600``.

    An existing file is never opened here: closing any descriptor of a file drops every POSIX lock
    this process holds on it, and SQLite connections already open on it in this process would lose
    theirs (another process could then checkpoint and delete the WAL under them)."""
    path = Path(path)
    private_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{path} is not a regular file; refusing to use it as a database") from None
        if (st.st_mode & 0o777) != PRIVATE_FILE:
            os.chmod(path, PRIVATE_FILE)
    else:
        os.close(fd)
    return path


def connect_private(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection to the SQLite file ``path`` (created ``0600`` in a ``0700`` folder) as every suite
    database uses it: WAL (readers never wait for the writer; other processes share the file),
    ``synchronous`` as ``SYNCHRONOUS`` gives it for the database (FULL: each commit fsynced), a 10 s
    busy timeout, rows by name, autocommit, usable from worker threads (callers serialise it with a
    lock)."""
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"PRAGMA synchronous={synchronous!r}")
    path = private_file(Path(path))
    # SQLite gives the -wal and -shm files it creates the database file's own mode (0600)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class Database:
    """One connection, serialised by a lock (callers may be worker threads)."""

    def __init__(self, path: Path, schema: str = "", synchronous: str = "FULL") -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self.conn = connect_private(self.path, synchronous)
        if schema:
            with self.lock:
                self.conn.executescript(schema)

    def execute(self, sql: str, params: tuple | list = ()) -> sqlite3.Cursor:
        with self.lock:
            return self.conn.execute(sql, params)

    def query(self, sql: str, params: tuple | list = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self.lock:
            self.conn.close()

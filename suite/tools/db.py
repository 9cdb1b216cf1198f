"""The security database (keys, approvals, audit): one SQLite file in WAL mode under the data dir.

The service and the ``suite keys`` / ``suite approvals`` CLI (another process) share this file.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from suite.settings import Settings


def security_db_path(settings: Settings) -> Path:
    return Path(settings.tools.security_db or settings.data_dir / "tools" / "security.db")


class Database:
    """One connection, serialised by a lock (callers may be worker threads)."""

    def __init__(self, path: Path, schema: str = "") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=10000")
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

"""Every suite database in WAL mode at its documented ``synchronous`` level (suite.auth.db.SYNCHRONOUS),
and an acknowledged commit survives the writer's SIGKILL with the file passing integrity_check."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time

from suite.auth.db import SYNCHRONOUS
from suite.auth.keys import KeyStore
from suite.memory.store import MemoryStore
from suite.settings import Settings
from suite.tools.stores import open_stores

LEVEL = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}

WRITER = """
import sys
from suite.memory.store import MemoryStore
store = MemoryStore(sys.argv[1])
n = 0
while True:
    n += 1
    note = store.add_note("drill", f"note {n} " + "x" * (n % 97))
    print(note.id, flush=True)  # acknowledged only once committed
"""


def _pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
    return conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0]


def test_each_database_runs_wal_at_its_documented_level(tmp_path):
    settings = Settings(data_dir=tmp_path)
    memory = MemoryStore(tmp_path / "memory.db")
    keys = KeyStore.open(settings.key_store_path)
    stores = open_stores(settings)
    try:
        assert _pragmas(memory._db) == ("wal", LEVEL[SYNCHRONOUS["memory"]])
        assert _pragmas(keys.db.conn) == ("wal", LEVEL[SYNCHRONOUS["keys"]])
        assert _pragmas(stores.db.conn) == ("wal", LEVEL[SYNCHRONOUS["security"]])
    finally:
        memory.close()
        keys.close()
        stores.close()


def test_acknowledged_notes_survive_a_sigkilled_writer(tmp_path):
    db = tmp_path / "memory.db"
    acked: list[int] = []
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        got = 0
        while got < 25 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.strip():
                acked.append(int(line))
                got += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = {r[0] for r in conn.execute("SELECT id FROM notes")}
        assert len(acked) == 75 and not set(acked) - ids  # every acknowledged note is there
    finally:
        conn.close()

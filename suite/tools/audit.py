"""Audit log: one row per call (and per approval decision) in the security database."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from suite.auth.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    request_id TEXT,
    transport TEXT NOT NULL,
    key_id TEXT,
    role TEXT,
    tool TEXT NOT NULL,
    args_sha256 TEXT,
    decision TEXT NOT NULL,
    duration_ms REAL NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    approval_id TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE INDEX IF NOT EXISTS audit_key_tool ON audit(key_id, tool);
"""


def args_digest(args: Any) -> str:
    """sha256 of the canonical JSON of the arguments (the arguments themselves are not stored)."""
    text = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class AuditRecord:
    transport: str  # rest | mcp | approval | cli
    tool: str
    decision: str  # allowed | approval_required | denied | unauthenticated | rate_limited | invalid | ...
    outcome: str  # success | error | pending | refused
    status: int
    key_id: str | None = None
    role: str | None = None
    args_sha256: str | None = None
    duration_ms: float = 0.0
    approval_id: str | None = None
    detail: str = ""
    request_id: str | None = None
    ts: float = 0.0


# every text column is cut to a bound, so no caller (an 8,000-character tool name in a URL) grows a row
FIELD_LIMITS = {"transport": 16, "tool": 100, "decision": 32, "outcome": 16, "key_id": 64, "role": 32,
                "args_sha256": 64, "approval_id": 64, "detail": 500, "request_id": 64}


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.lock:
            db.conn.executescript(SCHEMA)

    def write(self, rec: AuditRecord) -> None:
        rec.ts = rec.ts or time.time()
        row = asdict(rec)
        for name, limit in FIELD_LIMITS.items():
            if isinstance(row[name], str):
                row[name] = row[name][:limit]
        cols = ", ".join(row)
        self.db.execute(f"INSERT INTO audit({cols}) VALUES ({', '.join('?' * len(row))})", list(row.values()))

    def recent(self, limit: int = 100, key_id: str | None = None, tool: str | None = None,
               since: float | None = None) -> list[dict]:
        sql, params = "SELECT * FROM audit WHERE 1=1", []
        for col, val in (("key_id", key_id), ("tool", tool)):
            if val:
                sql += f" AND {col}=?"
                params.append(val)
        if since is not None:
            sql += " AND ts>=?"
            params.append(since)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(1, min(limit, 1000)))
        return [dict(r) for r in self.db.query(sql, params)]


MAX_REFUSAL_BUCKETS = 10_000  # beyond this, open windows are summed up early (a flood of addresses)


@dataclass
class _Window:
    started: float
    first: AuditRecord
    audited: int = 0  # rows written one by one in this window
    folded: int = 0  # refusals counted into the window's summary row
    last_ts: float = 0.0


class RefusalAudit:
    """Refused requests (no key, a bad key, a role outside the route's policy) in the audit log, bounded
    per client: in each ``window_s`` window the first ``per_window`` refusals of one client address
    and status are written row by row, the rest are counted and written as **one** summary row when
    the window ends. An anonymous client that sends 100 requests adds ``per_window`` + 1 rows, not
    100 (the auth layer's ``auth.unauthenticated_per_minute`` answers 429 beyond that, unaudited).
    ``flush`` writes the summaries of ended windows (the approval poller calls it every second, the
    service's shutdown with ``force``)."""

    def __init__(self, audit: AuditLog, per_window: int, window_s: float = 60.0) -> None:
        self.audit = audit
        self.per_window = per_window
        self.window_s = window_s
        self._windows: dict[tuple[str, int], _Window] = {}
        self._lock = threading.Lock()

    def refused(self, client: str, rec: AuditRecord, now: float | None = None) -> bool:
        """Record one refusal; True when it got a row of its own."""
        now = time.time() if now is None else now
        rec.ts = rec.ts or now
        key = (client, rec.status)
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.started >= self.window_s:
                self._close(key, window)
                window = None
            if window is None:
                if len(self._windows) >= MAX_REFUSAL_BUCKETS:
                    for old in list(self._windows.items())[:MAX_REFUSAL_BUCKETS // 10]:
                        self._close(*old)
                window = self._windows[key] = _Window(now, rec)
            window.last_ts = now
            if window.audited < self.per_window:
                window.audited += 1
                own = True
            else:
                window.folded += 1
                own = False
        if own:
            self.audit.write(rec)
        return own

    def flush(self, now: float | None = None, force: bool = False) -> int:
        """Write the summary rows of windows that ended (every window with ``force``); how many."""
        now = time.time() if now is None else now
        with self._lock:
            ended = [(k, w) for k, w in self._windows.items() if force or now - w.started >= self.window_s]
            for key, window in ended:
                self._close(key, window)
        return len(ended)

    def _close(self, key: tuple[str, int], window: _Window) -> None:
        """Under the lock: drop the window, writing its summary row when refusals were folded into it."""
        self._windows.pop(key, None)
        if not window.folded:
            return
        client, status = key
        first = window.first
        self.audit.write(replace(
            first, tool="(refused requests)", ts=window.last_ts, request_id=None, args_sha256=None,
            detail=f"{window.folded} more refused requests ({status}) from {client} in "
                   f"{window.last_ts - window.started:.0f} s after {window.audited} audited one by one, "
                   f"e.g. {first.tool}: {first.detail}"))

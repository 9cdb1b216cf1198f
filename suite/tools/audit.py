"""Audit log: one row per call (and per approval decision) in the security database."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
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

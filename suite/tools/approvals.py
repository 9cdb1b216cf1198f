"""Approval requests for destructive calls: pending -> approved/denied/expired -> executed/failed.

``claim`` moves one approved request to 'executing' with a single conditional UPDATE, so however
many callers race (the HTTP approve route, the poller that serves CLI approvals), it runs once.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from suite.tools.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requester_role TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    decided_by TEXT,
    decided_at REAL,
    reason TEXT NOT NULL DEFAULT '',
    executed_at REAL,
    result TEXT
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals(status);
"""

PENDING, APPROVED, DENIED, EXPIRED, EXECUTING, EXECUTED, FAILED = (
    "pending", "approved", "denied", "expired", "executing", "executed", "failed")


class ApprovalError(Exception):
    """A decision that cannot be made (unknown id, already decided, expired)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class ApprovalStore:
    def __init__(self, db: Database, ttl_s: float) -> None:
        self.db = db
        self.ttl_s = ttl_s
        with db.lock:
            db.conn.executescript(SCHEMA)

    def create(self, tool: str, arguments: dict, key_id: str, role: str) -> dict[str, Any]:
        now = time.time()
        approval_id = "apr_" + secrets.token_hex(8)
        self.db.execute(
            "INSERT INTO approvals(id, tool, arguments, requested_by, requester_role, status, created_at,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (approval_id, tool, json.dumps(arguments), key_id, role, PENDING, now, now + self.ttl_s))
        return self.get(approval_id)

    def expire(self, now: float | None = None) -> list[str]:
        """Mark pending requests past their deadline as expired; return their ids."""
        now = time.time() if now is None else now
        with self.db.lock:
            ids = [r["id"] for r in self.db.query(
                "SELECT id FROM approvals WHERE status=? AND expires_at<=?", (PENDING, now))]
            for approval_id in ids:
                self.db.execute("UPDATE approvals SET status=? WHERE id=? AND status=?",
                                (EXPIRED, approval_id, PENDING))
        return ids

    def get(self, approval_id: str) -> dict[str, Any]:
        rows = self.db.query("SELECT * FROM approvals WHERE id=?", (approval_id,))
        if not rows:
            raise ApprovalError(404, f"approval '{approval_id}' not found", "approval_not_found")
        return _row(rows[0])

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if status:
            rows = self.db.query("SELECT * FROM approvals WHERE status=? ORDER BY created_at DESC LIMIT ?",
                                 (status, limit))
        else:
            rows = self.db.query("SELECT * FROM approvals ORDER BY created_at DESC LIMIT ?", (limit,))
        return [_row(r) for r in rows]

    def decide(self, approval_id: str, approve: bool, decided_by: str, reason: str = "") -> dict[str, Any]:
        """Approve or deny a pending request (409 if it is no longer pending, 410 if expired)."""
        self.expire()
        with self.db.lock:
            current = self.get(approval_id)
            if current["status"] == EXPIRED:
                raise ApprovalError(410, f"approval '{approval_id}' expired before a decision",
                                    "approval_expired")
            cur = self.db.execute(
                "UPDATE approvals SET status=?, decided_by=?, decided_at=?, reason=? WHERE id=? AND status=?",
                (APPROVED if approve else DENIED, decided_by, time.time(), reason, approval_id, PENDING))
            if cur.rowcount != 1:
                raise ApprovalError(409, f"approval '{approval_id}' is already {current['status']}",
                                    "approval_not_pending")
        return self.get(approval_id)

    def claim(self, approval_id: str) -> dict[str, Any] | None:
        """Take an approved request for execution; None if someone else already did."""
        cur = self.db.execute("UPDATE approvals SET status=? WHERE id=? AND status=?",
                              (EXECUTING, approval_id, APPROVED))
        return self.get(approval_id) if cur.rowcount == 1 else None

    def finish(self, approval_id: str, ok: bool, result: Any) -> dict[str, Any]:
        self.db.execute("UPDATE approvals SET status=?, executed_at=?, result=? WHERE id=? AND status=?",
                        (EXECUTED if ok else FAILED, time.time(), json.dumps(result, default=str)[:100_000],
                         approval_id, EXECUTING))
        return self.get(approval_id)

    def approved_ids(self) -> list[str]:
        return [r["id"] for r in self.db.query("SELECT id FROM approvals WHERE status=?", (APPROVED,))]


def _row(row) -> dict[str, Any]:
    d = dict(row)
    d["arguments"] = json.loads(d["arguments"])
    d["result"] = json.loads(d["result"]) if d["result"] else None
    return d

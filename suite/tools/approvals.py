"""Approval requests for destructive calls: pending -> approved/denied/expired/cancelled ->
executing -> executed/failed.

``claim`` moves one approved request to 'executing' with a single conditional UPDATE, so however
many callers race (the HTTP approve route, the poller that serves CLI approvals), it runs once.
A pending request expires after ``ttl_s``; an approved one that nobody ran (the service was down)
after ``approved_ttl_s``; one still 'executing' when the service starts was cut off by a crash and is
marked failed (``recover_interrupted``); one whose requester's key is revoked or expired is
cancelled rather than run (the dispatcher checks, ``cancel`` records it).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from suite.auth.db import Database

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

PENDING, APPROVED, DENIED, EXPIRED, CANCELLED, EXECUTING, EXECUTED, FAILED = (
    "pending", "approved", "denied", "expired", "cancelled", "executing", "executed", "failed")
STATUSES = (PENDING, APPROVED, DENIED, EXPIRED, CANCELLED, EXECUTING, EXECUTED, FAILED)


class ApprovalError(Exception):
    """A decision that cannot be made (unknown id, already decided, expired)."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class ApprovalStore:
    def __init__(self, db: Database, ttl_s: float, approved_ttl_s: float = 300.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.approved_ttl_s = approved_ttl_s
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
        """Mark pending requests past their deadline, and approved ones nobody ran within
        ``approved_ttl_s``, as expired; return their ids."""
        now = time.time() if now is None else now
        with self.db.lock:
            rows = self.db.query(
                "SELECT id, status FROM approvals WHERE (status=? AND expires_at<=?) OR (status=? AND decided_at<=?)",
                (PENDING, now, APPROVED, now - self.approved_ttl_s))
            for row in rows:
                self.db.execute("UPDATE approvals SET status=?, reason=reason || ? WHERE id=? AND status=?",
                                (EXPIRED, " (approved but not run in time)" if row["status"] == APPROVED else "",
                                 row["id"], row["status"]))
        return [r["id"] for r in rows]

    def recover_interrupted(self) -> list[str]:
        """At start-up: requests left 'executing' by a crash are failed (they may have half-run)."""
        with self.db.lock:
            ids = [r["id"] for r in self.db.query("SELECT id FROM approvals WHERE status=?", (EXECUTING,))]
            for approval_id in ids:
                self.db.execute(
                    "UPDATE approvals SET status=?, executed_at=?, result=? WHERE id=? AND status=?",
                    (FAILED, time.time(), json.dumps({"error": "interrupted: the tools service stopped "
                                                               "while this call ran; check its effect"}),
                     approval_id, EXECUTING))
        return ids

    def cancel(self, approval_id: str, reason: str) -> dict[str, Any]:
        """Cancel a request that has not finished (its requester's key is no longer valid)."""
        self.db.execute("UPDATE approvals SET status=?, result=? WHERE id=? AND status IN (?, ?, ?)",
                        (CANCELLED, json.dumps({"error": reason}), approval_id, PENDING, APPROVED, EXECUTING))
        return self.get(approval_id)

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

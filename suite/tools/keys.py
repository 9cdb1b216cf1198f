"""API keys: ``sk_suite_<id>_<secret>``, shown once, stored as sha256, checked in constant time.

The id (12 hex characters) finds the row; the hash of the whole key is compared with
``hmac.compare_digest``. A high-entropy random key needs no slow KDF.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from suite.tools.db import Database
from suite.tools.rbac import ROLES

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL,
    key_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""

KEY_FORMAT = re.compile(r"^sk_suite_([0-9a-f]{12})_([A-Za-z0-9_-]{32,64})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its role and its name."""

    key_id: str
    role: str
    name: str = ""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.lock:
            db.conn.executescript(SCHEMA)

    def create(self, role: str, name: str = "") -> tuple[Principal, str]:
        """Make a key; return its principal and the key itself (the only time it is visible)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        key_id = secrets.token_hex(6)
        key = f"sk_suite_{key_id}_{secrets.token_urlsafe(32)}"
        self.db.execute("INSERT INTO api_keys(id, name, role, key_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
                        (key_id, name, role, hash_key(key), time.time()))
        return Principal(key_id, role, name), key

    def verify(self, key: str | None) -> Principal | None:
        """The principal of a valid, unrevoked key; None otherwise."""
        if not key:
            return None
        m = KEY_FORMAT.match(key)
        rows = self.db.query("SELECT * FROM api_keys WHERE id=?", (m.group(1),)) if m else []
        stored = rows[0]["key_sha256"] if rows else _DUMMY_HASH
        ok = hmac.compare_digest(stored, hash_key(key))  # compared even for unknown ids
        if not ok or not rows or rows[0]["revoked_at"] is not None:
            return None
        return Principal(rows[0]["id"], rows[0]["role"], rows[0]["name"])

    def is_active(self, key_id: str) -> bool:
        """True while the key exists and is not revoked (an approval dies with its requester's key)."""
        rows = self.db.query("SELECT revoked_at FROM api_keys WHERE id=?", (key_id,))
        return bool(rows) and rows[0]["revoked_at"] is None

    @staticmethod
    def key_id_of(key: str | None) -> str | None:
        """The id part of a well-formed key (for the audit of a failed attempt)."""
        m = KEY_FORMAT.match(key or "")
        return m.group(1) if m else None

    def list(self) -> list[dict]:
        return [{k: r[k] for k in ("id", "name", "role", "created_at", "revoked_at")}
                for r in self.db.query("SELECT * FROM api_keys ORDER BY created_at")]

    def revoke(self, key_id: str) -> bool:
        cur = self.db.execute("UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                              (time.time(), key_id))
        return cur.rowcount == 1

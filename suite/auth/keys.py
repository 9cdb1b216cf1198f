"""API keys of the whole suite: ``sk_suite_<id>_<secret>``, shown once, stored as sha256, checked in
constant time, optionally expiring, optionally owned by a run.

The id (12 hex characters) finds the row; the hash of the whole key is compared with
``hmac.compare_digest``. A high-entropy random key needs no slow KDF. A key minted by a pipeline
run carries the run's id (``run_id``) so the run revokes exactly its own keys when it ends.

``KeyCache`` sits on every request of every service: a verified key is trusted for
``auth.cache_s`` seconds (default 5) before the store is read again, so a revocation is noticed
within that bound, and an expiry exactly (the cached entry carries the key's own deadline).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from suite.auth.db import SYNCHRONOUS, Database
from suite.auth.roles import ROLES

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL,
    key_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    expires_at REAL,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_run ON api_keys(run_id);
"""

KEY_FORMAT = re.compile(r"^sk_suite_([0-9a-f]{12})_([A-Za-z0-9_-]{32,64})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()
TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its role and its name."""

    key_id: str
    role: str
    name: str = ""
    expires_at: float | None = None


@dataclass(frozen=True)
class KeyCheck:
    """A key's check: the principal, or why there is none (for a 401 message)."""

    principal: Principal | None
    reason: str = ""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_ttl(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d`` (or plain seconds) as seconds; ValueError otherwise."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"TTL must look like 90s, 30m, 12h or 7d (got {text!r})")
    return float(m.group(1)) * TTL_UNITS[m.group(2) or "s"]


class KeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        with db.lock:
            db.conn.executescript(SCHEMA)

    @classmethod
    def open(cls, path: Path) -> KeyStore:
        return cls(Database(path, synchronous=SYNCHRONOUS["keys"]))

    def close(self) -> None:
        self.db.close()

    def create(self, role: str, name: str = "", ttl_s: float | None = None,
               run_id: str | None = None) -> tuple[Principal, str]:
        """Make a key; return its principal and the key itself (the only time it is visible)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        key_id = secrets.token_hex(6)
        key = f"sk_suite_{key_id}_{secrets.token_urlsafe(32)}"
        now = time.time()
        expires = now + ttl_s if ttl_s else None
        self.db.execute("INSERT INTO api_keys(id, name, role, key_sha256, created_at, expires_at, run_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", (key_id, name, role, hash_key(key), now, expires, run_id))
        return Principal(key_id, role, name, expires), key

    def check(self, key: str | None, now: float | None = None) -> KeyCheck:
        """The principal of a valid key, or the reason it is not valid."""
        if not key:
            return KeyCheck(None, "missing API key: send 'Authorization: Bearer KEY'")
        m = KEY_FORMAT.match(key)
        rows = self.db.query("SELECT * FROM api_keys WHERE id=?", (m.group(1),)) if m else []
        stored = rows[0]["key_sha256"] if rows else _DUMMY_HASH
        ok = hmac.compare_digest(stored, hash_key(key))  # compared even for unknown ids
        if not ok or not rows:
            return KeyCheck(None, "invalid API key")
        row = rows[0]
        if row["revoked_at"] is not None:
            return KeyCheck(None, f"API key {row['id']} was revoked")
        if row["expires_at"] is not None and row["expires_at"] <= (now or time.time()):
            return KeyCheck(None, f"API key {row['id']} expired")
        return KeyCheck(Principal(row["id"], row["role"], row["name"], row["expires_at"]))

    def verify(self, key: str | None) -> Principal | None:
        """The principal of a valid (known, unrevoked, unexpired) key; None otherwise."""
        return self.check(key).principal

    def is_active(self, key_id: str, now: float | None = None) -> bool:
        """True while the key exists, is not revoked and has not expired (an approval dies with its
        requester's key)."""
        rows = self.db.query("SELECT revoked_at, expires_at FROM api_keys WHERE id=?", (key_id,))
        if not rows or rows[0]["revoked_at"] is not None:
            return False
        return rows[0]["expires_at"] is None or rows[0]["expires_at"] > (now or time.time())

    @staticmethod
    def key_id_of(key: str | None) -> str | None:
        """The id part of a well-formed key (for the audit of a failed attempt)."""
        m = KEY_FORMAT.match(key or "")
        return m.group(1) if m else None

    def list(self) -> list[dict]:
        now = time.time()
        rows = []
        for r in self.db.query("SELECT * FROM api_keys ORDER BY created_at"):
            d = {k: r[k] for k in ("id", "name", "role", "created_at", "revoked_at", "expires_at", "run_id")}
            d["state"] = ("revoked" if r["revoked_at"] is not None else
                          "expired" if r["expires_at"] is not None and r["expires_at"] <= now else "active")
            rows.append(d)
        return rows

    def revoke(self, key_id: str) -> bool:
        cur = self.db.execute("UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                              (time.time(), key_id))
        return cur.rowcount == 1

    def revoke_run(self, run_id: str) -> int:
        """Revoke every key minted by a run; the number revoked."""
        cur = self.db.execute("UPDATE api_keys SET revoked_at=? WHERE run_id=? AND revoked_at IS NULL",
                              (time.time(), run_id))
        return cur.rowcount


class KeyCache:
    """Verified keys, trusted for ``ttl_s`` seconds (never past their own expiry)."""

    MAX_ENTRIES = 4096

    def __init__(self, store: KeyStore, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str | None) -> KeyCheck:
        if not key:
            return self.store.check(key)
        now = time.time()
        digest = hash_key(key)
        with self._lock:
            hit = self._entries.get(digest)
        if hit is not None:
            principal, checked = hit
            fresh = now - checked < self.ttl_s
            if fresh and (principal.expires_at is None or principal.expires_at > now):
                return KeyCheck(principal)
        verdict = self.store.check(key, now)
        with self._lock:
            if verdict.principal is None:
                self._entries.pop(digest, None)
            else:
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries.clear()
                self._entries[digest] = (verdict.principal, now)
        return verdict

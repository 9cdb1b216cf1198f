"""Keys, approvals, rate limiter and the tools' RBAC table on their own (no server)."""

from __future__ import annotations

import time

import pytest

from suite.auth.db import Database
from suite.auth.keys import KeyStore, hash_key
from suite.auth.ratelimit import RateLimiter
from suite.tools import rbac
from suite.tools.approvals import ApprovalError, ApprovalStore
from suite.tools.registry import TOOLS


@pytest.fixture
def db(tmp_path):
    d = Database(tmp_path / "security.db")
    yield d
    d.close()


def test_keys_are_hashed_verified_and_revocable(db):
    store = KeyStore(db)
    principal, key = store.create("developer", "ci")
    assert key.startswith(f"sk_suite_{principal.key_id}_")
    stored = db.query("SELECT key_sha256 FROM api_keys")[0][0]
    assert stored == hash_key(key) and key not in stored
    assert store.verify(key) == principal
    for wrong in (key[:-1] + ("A" if key[-1] != "A" else "B"), "", None, "sk_suite_zz", key + "x"):
        assert store.verify(wrong) is None
    assert store.revoke(principal.key_id) and store.verify(key) is None
    with pytest.raises(ValueError):
        store.create("root")


def test_approvals_expire_and_run_once(db):
    store = ApprovalStore(db, ttl_s=0.05)
    rec = store.create("delete_file", {"path": "x"}, "k1", "developer")
    time.sleep(0.1)
    assert store.expire() == [rec["id"]]
    with pytest.raises(ApprovalError) as info:
        store.decide(rec["id"], True, "admin")
    assert info.value.status == 410

    store.ttl_s = 60
    rec = store.create("delete_file", {"path": "y"}, "k1", "developer")
    assert store.decide(rec["id"], True, "admin")["status"] == "approved"
    claims = [store.claim(rec["id"]) for _ in range(3)]
    assert sum(c is not None for c in claims) == 1
    assert store.finish(rec["id"], True, {"ok": 1})["status"] == "executed"
    with pytest.raises(ApprovalError) as info:
        store.decide(rec["id"], False, "admin")
    assert info.value.status == 409


def test_rate_limiter_window():
    rl = RateLimiter(3, window_s=10)
    assert [rl.check("k", now=t) for t in (0, 1, 2)] == [0, 0, 0]
    assert rl.check("k", now=3) == pytest.approx(7)
    assert rl.check("k2", now=3) == 0
    assert rl.check("k", now=10.5) == 0


def test_rate_limit_is_per_key_across_tools_with_stricter_tool_overrides():
    rl = RateLimiter(60, window_s=60)
    key, per_tool = ("key", "k"), [(("key", "k"), 5), (("tool", "k", "run_command"), 2)]
    assert [rl.check_limits(per_tool, now=t) for t in (0, 1)] == [0, 0]
    assert rl.check_limits(per_tool, now=2) == pytest.approx(58)  # the tool's own budget is spent
    assert [rl.check_limits([(key, 5)], now=t) for t in (3, 4, 5)] == [0, 0, 0]  # another tool
    assert rl.check_limits([(key, 5)], now=6) == pytest.approx(54)  # the key's budget, all tools together
    # a refused call is recorded in no bucket: it does not push the key's window further
    assert rl.check_limits([(("key", "other"), 1), (("tool", "other", "x"), 0)], now=0) > 0
    assert rl.check_limits([(("key", "other"), 1)], now=0) == 0


def test_rbac_table_denies_by_default():
    D = rbac.Decision
    assert rbac.decide("guest", True, False, True) is D.ALLOW
    assert rbac.decide("guest", False, False, True) is D.DENY
    assert rbac.decide("guest", False, True, True) is D.DENY
    assert rbac.decide("developer", False, False, True) is D.ALLOW
    assert rbac.decide("developer", False, True, True) is D.APPROVAL
    assert rbac.decide("developer", False, True, False) is D.ALLOW
    assert rbac.decide("admin", False, True, True) is D.ALLOW
    for role in (None, "", "root", "Admin"):
        assert rbac.decide(role, True, False, True) is D.DENY


def test_tool_table_is_complete():
    names = {t.name for t in TOOLS}
    assert len(TOOLS) >= 18 and len(names) == len(TOOLS)
    for spec in TOOLS:
        assert spec.input_schema["type"] == "object" and spec.description
        assert not (spec.read_only and spec.destructive)
    assert {"read_file", "write_file", "delete_file", "memory_save", "rag_query", "chat", "embed",
            "git_status", "run_command", "system_info"} <= names

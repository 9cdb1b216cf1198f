"""The dispatcher on its own (no server): rate limits per key across tools, bounded audit rows, arguments checked when requested, approvals that die with their requester's
key, expire when approved but not run, and fail when a crash cut them off."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from suite.settings import Settings
from suite.tools import cli as tools_cli
from suite.tools.dispatch import ToolMetrics, ToolService
from suite.tools.errors import ToolError
from suite.tools.sandbox import Sandbox
from suite.tools.spec import ToolContext
from suite.tools.stores import open_stores


@pytest.fixture
def service(tmp_path):
    settings = Settings(data_dir=tmp_path, tools={"rate_limit_per_minute": 50, "max_file_bytes": 1000,
                                                  "max_argument_bytes": 4000})
    stores = open_stores(settings)
    ctx = ToolContext(settings=settings, sandbox=Sandbox.from_settings(settings), http=None)
    svc = ToolService(settings, ctx, stores.keys, stores.approvals, stores.audit, ToolMetrics(CollectorRegistry()))
    svc.stores = stores
    (ctx.sandbox.roots[0] / "a.txt").write_text("a")
    yield svc
    stores.close()


def key(svc: ToolService, role: str):
    principal, secret = svc.keys.create(role, "test")
    return principal, secret


def call(svc, principal, name, args):
    return asyncio.run(svc.call(principal, name, args, transport="rest"))


def test_rate_limit_is_per_key_across_all_tools(service):
    service.settings.tools.rate_limit_per_minute = 5
    dev, _ = key(service, "developer")
    tools = ["read_file", "file_info", "list_directory", "search_files", "system_info"]
    args = {"read_file": {"path": "a.txt"}, "file_info": {"path": "a.txt"}}
    assert [call(service, dev, t, args.get(t, {})).status for t in tools] == [200] * 5
    refused = call(service, dev, "read_file", {"path": "a.txt"})  # a sixth tool call, any tool
    assert refused.status == 429 and refused.headers["Retry-After"]
    assert "5/min per key" in refused.body["error"]["message"]
    other, _ = key(service, "developer")
    assert call(service, other, "read_file", {"path": "a.txt"}).status == 200


def test_audit_rows_stay_bounded(service):
    long_name = "t" * 8000
    service.audit_refusal("rest", "/tools/" + long_name, 401, "invalid API key " + "x" * 900, "k" * 300)
    row = service.audit.recent(1)[0]
    assert (len(row["tool"]), len(row["detail"]), len(row["key_id"])) == (100, 500, 64)
    dev, _ = key(service, "developer")
    r = call(service, dev, long_name, {})
    assert r.status == 404 and len(r.body["error"]["message"]) < 200
    assert len(service.audit.recent(1)[0]["tool"]) == 100


def test_refused_requests_cost_a_bounded_number_of_audit_rows(service):
    """The attack: 100 unauthenticated requests added 100 audit rows. Now a client's refusals of one
    minute are its first five rows plus one summary row with the count."""
    t0 = time.time()
    for n in range(100):
        service.audit_refusal("rest", f"/tools/read_file?{n}", 401, "no API key", None, client="10.0.0.1")
    for _ in range(3):
        service.audit_refusal("rest", "/tools", 401, "invalid API key", "abc", client="10.0.0.2")
    rows = service.audit.recent(1000, since=t0)
    assert len(rows) == 5 + 3 and {r["decision"] for r in rows} == {"unauthenticated"}
    assert service.refusals.flush(now=t0 + 1) == 0  # the minute is not over: nothing summed up yet
    assert service.refusals.flush(now=t0 + 61) == 2  # both windows end; only one folded refusals
    rows = service.audit.recent(1000, since=t0)
    [summary] = [r for r in rows if r["tool"] == "(refused requests)"]
    assert len(rows) == 9 and "95 more refused requests (401) from 10.0.0.1" in summary["detail"]
    service.audit_refusal("rest", "/tools", 401, "no API key", None, client="10.0.0.1")  # a new minute
    assert len(service.audit.recent(1000, since=t0)) == 10


def test_oversized_or_impossible_destructive_calls_are_refused_when_requested(service):
    dev, _ = key(service, "developer")
    r = call(service, dev, "write_file", {"path": "big.txt", "content": "x" * 1001})
    assert r.status == 413 and r.body["error"]["code"] == "file_too_large"
    r = call(service, dev, "write_file", {"path": "big.txt", "content": "x" * 5000})
    assert r.status == 413 and r.body["error"]["code"] == "arguments_too_large"
    for args, status in (({"path": "../out.txt", "content": "x"}, 403), ({"path": "/etc/x", "content": "x"}, 403),
                         ({"path": ".", "content": "x"}, 400)):
        assert call(service, dev, "write_file", args).status == status
    assert call(service, dev, "delete_file", {"path": "missing.txt"}).status == 404
    assert call(service, dev, "edit_file", {"path": "missing.txt", "old_text": "a", "new_text": "b"}).status == 404
    assert service.approvals.list() == []  # nothing was parked for an admin to approve in vain


def test_a_request_dies_with_its_requesters_key(service):
    dev, _ = key(service, "developer")
    admin, _ = key(service, "admin")
    parked = call(service, dev, "write_file", {"path": "w.txt", "content": "x"})
    assert parked.status == 202
    service.keys.revoke(dev.key_id)
    with pytest.raises(ToolError) as info:
        asyncio.run(service.decide(admin, parked.body["approval_id"], True, "ok"))
    assert info.value.status == 409 and "revoked" in info.value.message
    assert service.approvals.get(parked.body["approval_id"])["status"] == "cancelled"
    assert not (service.ctx.sandbox.roots[0] / "w.txt").exists()

    dev2, _ = key(service, "developer")  # approved by the CLI, revoked before the poller runs it
    parked = call(service, dev2, "write_file", {"path": "w2.txt", "content": "x"})
    service.approvals.decide(parked.body["approval_id"], True, "cli:op")
    service.keys.revoke(dev2.key_id)
    done = asyncio.run(service.execute_approved(parked.body["approval_id"]))
    assert done["status"] == "cancelled" and not (service.ctx.sandbox.roots[0] / "w2.txt").exists()


def test_cli_refuses_to_approve_for_a_revoked_key(service, capsys):
    dev, _ = key(service, "developer")
    parked = call(service, dev, "delete_file", {"path": "a.txt"})
    service.keys.revoke(dev.key_id)
    args = SimpleNamespace(approvals_action="approve", approval_id=parked.body["approval_id"], reason="", wait=0)
    assert tools_cli.cmd_approvals(service.settings, args) == 1
    assert "revoked" in capsys.readouterr().out
    assert service.approvals.get(parked.body["approval_id"])["status"] == "cancelled"


def test_approved_but_not_run_requests_expire_and_interrupted_ones_fail(service):
    dev, _ = key(service, "developer")
    ids = [call(service, dev, "write_file", {"path": f"f{i}.txt", "content": "x"}).body["approval_id"]
           for i in range(2)]
    for approval_id in ids:
        service.approvals.decide(approval_id, True, "cli:op")
    assert service.approvals.expire(now=time.time() + service.settings.tools.approved_ttl_s + 1) == ids
    assert {service.approvals.get(i)["status"] for i in ids} == {"expired"}
    assert asyncio.run(service.execute_approved(ids[0]))["status"] == "expired"  # never runs now

    third = call(service, dev, "write_file", {"path": "f3.txt", "content": "x"}).body["approval_id"]
    service.approvals.decide(third, True, "cli:op")
    assert service.approvals.claim(third)["status"] == "executing"  # ... and the service dies here
    assert service.approvals.recover_interrupted() == [third]
    rec = service.approvals.get(third)
    assert rec["status"] == "failed" and "interrupted" in rec["result"]["error"]


def test_approvals_show_every_argument_in_full(service, capsys):
    dev, _ = key(service, "developer")
    path = "deep/" + "p" * 300 + ".txt"
    parked = call(service, dev, "write_file", {"path": path, "content": "line1\nline2\x1b[2J", "create_dirs": True})
    assert parked.status == 202, parked.body
    args = SimpleNamespace(approvals_action="list", all=False, status=None, json=False)
    assert tools_cli.cmd_approvals(service.settings, args) == 0
    out = capsys.readouterr().out
    assert "p" * 300 in "".join(out.split())  # folded over lines (whitespace added), never cut
    assert max(len(line) for line in out.splitlines() if line.startswith("    ")) <= 115
    assert "\\u001b[2J" in out and "\x1b" not in out  # a terminal escape is shown, not obeyed

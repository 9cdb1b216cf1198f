"""The tools service for real: REST and an official MCP client against the running app (with the
memory service beside it), keys made by the CLI, RBAC, approvals, rate limits, sandbox and audit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import httpx
import pytest

from harness.mcp_client import mcp_session
from harness.smoke import memory as memory_smoke
from harness.smoke import tools as tools_smoke
from suite.testing import run_cli, serve, stack_settings

RATE_LIMIT = 400  # per key, all tools together (unit-tested with small numbers in test_tools_dispatch)
TOOL_LIMIT = 8  # system_info's stricter per-tool override
SECRET = "outside-secret-91b2"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("tools")
    settings = stack_settings(data, tools={"rate_limit_per_minute": RATE_LIMIT, "approval_poll_s": 0.2,
                                           "rate_limit_per_tool": {"system_info": TOOL_LIMIT},
                                           "command_timeout_s": 3},
                              memory={"maintainer_enabled": False})
    with serve(settings, "memory", "tools"):
        root = data / "sandbox"
        (root / "docs").mkdir(parents=True)
        (root / "docs" / "hello.txt").write_text("hello sandbox\n")
        outside = data / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_text(SECRET)
        os.symlink(outside / "secret.txt", root / "link_out")
        os.symlink(outside, root / "dir_out")
        os.symlink("/dev/zero", root / "zero")
        os.mkfifo(root / "fifo")
        yield settings


@pytest.fixture(scope="module")
def keys(stack):
    return {role: cli_key(stack, role) for role in ("admin", "developer", "guest")}


def call(settings, key, tool, args=None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{settings.url('tools')}/tools/{tool}", json=args if args is not None else {},
                      headers=headers, timeout=30, **kw)


def cli_key(settings, role: str) -> str:
    """A new API key of ``role``, made by the ``suite keys`` CLI as an operator would."""
    proc = run_cli(settings, "keys", "create", "--role", role, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["key"]


def admin_get(settings, key, path, **params) -> httpx.Response:
    return httpx.get(settings.url("tools") + path, headers={"Authorization": f"Bearer {key}"},
                     params=params, timeout=30)


async def mcp_session_run(settings, key, fn):
    async with mcp_session(settings.url("tools") + "/mcp", {"Authorization": f"Bearer {key}"}) as session:
        return await fn(session)


# -- MCP ------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_mcp_client_lists_tools_and_reads_a_file(stack, keys):
    async def go(session):
        listed = await session.list_tools()
        result = await session.call_tool("read_file", {"path": "docs/hello.txt"})
        return listed.tools, result

    tools, result = asyncio.run(mcp_session_run(stack, keys["developer"], go))
    by_name = {t.name: t for t in tools}
    assert len(by_name) >= 18
    assert by_name["read_file"].annotations.readOnlyHint is True
    assert by_name["delete_file"].annotations.destructiveHint is True
    assert by_name["read_file"].inputSchema["required"] == ["path"]
    assert not result.isError
    assert result.structuredContent["result"]["content"] == "hello sandbox\n"
    assert "hello sandbox" in result.content[0].text


def test_mcp_guest_sees_read_only_tools_and_is_refused_writes(stack, keys):
    async def go(session):
        listed = await session.list_tools()
        denied = await session.call_tool("write_file", {"path": "x.txt", "content": "x"})
        return listed.tools, denied

    tools, denied = asyncio.run(mcp_session_run(stack, keys["guest"], go))
    assert tools and all(t.annotations.readOnlyHint for t in tools)
    assert denied.isError and denied.structuredContent["http_status"] == 403


def test_mcp_needs_a_valid_key(stack):
    url = stack.url("tools") + "/mcp"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {"Accept": "application/json, text/event-stream"}
    assert httpx.post(url, json=body, headers=headers).status_code == 401
    bad = dict(headers, Authorization="Bearer sk_suite_000000000000_" + "A" * 43)
    r = httpx.post(url, json=body, headers=bad)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


# -- REST, RBAC, errors ---------------------------------------------------------------------------
def test_rest_read_file_and_error_shapes(stack, keys):
    r = call(stack, keys["guest"], "read_file", {"path": "docs/hello.txt"})
    assert r.status_code == 200 and r.json()["result"]["content"] == "hello sandbox\n"
    r = call(stack, keys["guest"], "read_file", {"arguments": {"path": "docs/hello.txt"}})
    assert r.status_code == 200
    assert call(stack, None, "read_file", {"path": "docs/hello.txt"}).status_code == 401
    assert call(stack, "not-a-key", "read_file", {"path": "docs/hello.txt"}).status_code == 401
    for args, status in (({"path": 3}, 400), ({}, 400), ({"path": "a", "extra": 1}, 400)):
        r = call(stack, keys["guest"], "read_file", args)
        assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "code"}
    r = httpx.post(f"{stack.url('tools')}/tools/read_file", content=b"{not json",
                   headers={"Authorization": f"Bearer {keys['guest']}"})
    assert r.status_code == 400
    assert call(stack, keys["guest"], "no_such_tool").status_code == 404


@pytest.mark.integration
def test_hostile_paths_escape_zero_times(stack, keys):
    outside = stack.data_dir / "outside"
    corpus = ["../outside/secret.txt", "../../../../etc/passwd", "docs/../../outside/secret.txt", "..",
              "/etc/passwd", str(outside / "secret.txt"), "link_out", "dir_out/secret.txt",
              "%2e%2e/outside/secret.txt", "%252e%252e/outside/secret.txt", "..%2f..%2fetc%2fpasswd",
              "%2E%2E/%2E%2E/etc/passwd", "docs/hello.txt\x00.png", "zero", "/dev/zero", "fifo",
              "/proc/self/environ", "..\\..\\etc\\passwd"]
    statuses = {}
    for path in corpus:
        for tool in ("read_file", "file_info"):
            r = call(stack, keys["admin"], tool, {"path": path})
            statuses[(tool, path)] = r.status_code
            assert SECRET not in r.text and "root:" not in r.text
            if r.status_code != 200:
                assert set(r.json()["error"]) == {"message", "type", "code"}
    # metadata of a FIFO inside the sandbox is fine; reading it is not
    assert [k for k, s in statuses.items() if s == 200] == [("file_info", "fifo")]
    assert all(s in (400, 403, 404) for k, s in statuses.items() if k != ("file_info", "fifo")), statuses

    async def via_mcp(session):
        return [await session.call_tool("read_file", {"path": p}) for p in corpus[:8]]

    results = asyncio.run(mcp_session_run(stack, keys["developer"], via_mcp))
    assert all(r.isError and r.structuredContent["http_status"] in (400, 403) for r in results)
    for path in corpus[:6]:  # admin writes skip approval: the sandbox alone must refuse them
        assert call(stack, keys["admin"], "write_file", {"path": path, "content": "pwned"}).status_code in (400, 403)
    assert (outside / "secret.txt").read_text() == SECRET and len(list(outside.iterdir())) == 1


def test_guest_write_is_forbidden(stack, keys):
    r = call(stack, keys["guest"], "write_file", {"path": "guest.txt", "content": "no"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert not (stack.data_dir / "sandbox" / "guest.txt").exists()
    assert call(stack, keys["guest"], "memory_save", {"text": "no"}).status_code == 403


def test_developer_delete_waits_for_admin_and_runs_once(stack, keys):
    target = stack.data_dir / "sandbox" / "victim.txt"
    target.write_text("delete me")
    r = call(stack, keys["developer"], "delete_file", {"path": "victim.txt"})
    assert r.status_code == 202 and r.json()["status"] == "pending_approval"
    approval_id = r.json()["approval_id"]
    assert target.exists()
    assert admin_get(stack, keys["developer"], f"/approvals/{approval_id}").json()["status"] == "pending"
    dev_try = httpx.post(f"{stack.url('tools')}/approvals/{approval_id}/approve", json={},
                         headers={"Authorization": f"Bearer {keys['developer']}"})
    assert dev_try.status_code == 403

    approve = lambda: httpx.post(f"{stack.url('tools')}/approvals/{approval_id}/approve",  # noqa: E731
                                 headers={"Authorization": f"Bearer {keys['admin']}"}, json={"reason": "ok"})
    first = approve()
    assert first.status_code == 200 and first.json()["status"] == "executed"
    assert first.json()["result"]["result"] == {"deleted": "victim.txt"}
    assert not target.exists()
    assert approve().status_code == 409
    time.sleep(0.5)  # two poller rounds: it must not run the request again
    rows = admin_get(stack, keys["admin"], "/audit", limit=1000).json()["entries"]
    runs = [e for e in rows if e["approval_id"] == approval_id and e["transport"] == "approval"]
    assert len(runs) == 1 and runs[0]["outcome"] == "success" and runs[0]["role"] == "developer"
    assert any(e["approval_id"] == approval_id and e["status"] == 202 for e in rows)


@pytest.mark.integration
def test_cli_approve_and_deny(stack, keys):
    r = call(stack, keys["developer"], "write_file", {"path": "cli/approved.txt", "content": "via cli",
                                                      "create_dirs": True})
    approval_id = r.json()["approval_id"]
    listed = run_cli(stack, "approvals", "list")
    assert approval_id in listed.stdout
    done = run_cli(stack, "approvals", "approve", approval_id, "--wait", "20")
    assert done.returncode == 0 and "executed" in done.stdout, done.stdout + done.stderr
    assert (stack.data_dir / "sandbox" / "cli" / "approved.txt").read_text() == "via cli"

    r = call(stack, keys["developer"], "write_file", {"path": "cli/denied.txt", "content": "no"})
    denied_id = r.json()["approval_id"]
    assert run_cli(stack, "approvals", "deny", denied_id, "--reason", "test").returncode == 0
    time.sleep(0.5)
    rec = admin_get(stack, keys["admin"], f"/approvals/{denied_id}").json()
    assert rec["status"] == "denied" and not (stack.data_dir / "sandbox" / "cli" / "denied.txt").exists()
    assert run_cli(stack, "approvals", "approve", denied_id).returncode == 1


def test_rate_limit_burst_gets_429(stack):
    key = cli_key(stack, "guest")
    codes, retry = [], None
    for _ in range(TOOL_LIMIT + 3):
        r = call(stack, key, "system_info")
        codes.append(r.status_code)
        if r.status_code == 429:
            retry = r.headers.get("retry-after")
            assert "8/min for 'system_info'" in r.json()["error"]["message"]
    assert codes.count(200) == TOOL_LIMIT and codes.count(429) == 3
    assert retry is not None and 1 <= int(retry) <= 60
    # the override is stricter for that tool only; the key's own budget is shared by every tool
    assert call(stack, key, "file_info", {"path": "docs/hello.txt"}).status_code == 200


@pytest.mark.integration
def test_anonymous_requests_do_not_grow_the_audit_log(stack):
    """Issue 32's attack on the real app: 100 unauthenticated requests added 100 audit rows."""
    since = time.time()
    codes = [call(stack, None, "read_file", {"path": "docs/hello.txt"}).status_code for _ in range(100)]
    assert set(codes) <= {401, 429}
    rows = admin_get(stack, cli_key(stack, "admin"), "/audit", since=since - 60, limit=1000).json()["entries"]
    anonymous = [r for r in rows if r["decision"] == "unauthenticated"]
    # one by one: at most the minute's allowance (earlier tests of this module may have spent some)
    assert anonymous and len([r for r in anonymous if r["ts"] >= since]) <= stack.tools.audit_refusals_per_minute


@pytest.mark.integration
def test_every_call_is_audited(stack):
    key = cli_key(stack, "developer")
    key_id = key.split("_")[2]
    calls = [("read_file", {"path": "docs/hello.txt"}), ("read_file", {"path": "../x"}),
             ("write_file", {"path": "a.txt", "content": "x"}), ("nope", {}), ("read_file", {"path": 1})]
    for tool, args in calls:
        call(stack, key, tool, args)
    rows = [dict(r) for r in admin_get(stack, cli_key(stack, "admin"), "/audit", key_id=key_id).json()["entries"]]
    assert len(rows) == len(calls)
    assert {r["decision"] for r in rows} == {"allowed", "approval_required", "unknown_tool", "invalid"}
    for r in rows:
        assert r["role"] == "developer" and len(r["args_sha256"]) == 64 and r["duration_ms"] >= 0
    import sqlite3

    db = sqlite3.connect(stack.data_dir / "tools" / "security.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT COUNT(*) FROM audit WHERE key_id=?", (key_id,)).fetchone()[0] == len(calls)
    keys_db = sqlite3.connect(stack.key_store_path)
    assert keys_db.execute("SELECT COUNT(*) FROM api_keys WHERE key_sha256 LIKE 'sk_%'").fetchone()[0] == 0


def test_metrics_are_exported(stack, keys):
    call(stack, keys["guest"], "read_file", {"path": "docs/hello.txt"})
    text = httpx.get(stack.url("tools") + "/metrics").text
    assert 'rbac_permission_checks_total{result="allowed",role="guest"}' in text
    assert 'mcp_tool_executions_total{status="success",tool="read_file"}' in text
    assert "approval_requests_total" in text


# -- the other tools ------------------------------------------------------------------------------
def test_upstream_tools_degrade_to_503(stack, keys):
    for tool, args in (("rag_query", {"query": "hi"}), ("chat", {"prompt": "hi"}), ("embed", {"texts": ["a"]})):
        r = call(stack, keys["developer"], tool, args)
        assert r.status_code == 503 and r.headers["retry-after"], (tool, r.text)
        assert r.json()["error"]["code"] == "upstream_unavailable"


def test_memory_tools_round_trip(stack, keys):
    saved = call(stack, keys["developer"], "memory_save", {"text": "the zebra codeword", "project": "t",
                                                          "tags": ["x"]})
    assert saved.status_code == 200, saved.text
    found = call(stack, keys["guest"], "memory_search", {"query": "zebra", "project": "t"})
    assert [n["id"] for n in found.json()["result"]["results"]] == [saved.json()["result"]["id"]]
    projects = call(stack, keys["guest"], "memory_list_projects").json()["result"]["projects"]
    assert any(p["name"] == "t" for p in projects)


def test_file_tools(stack, keys):
    admin = keys["admin"]
    assert call(stack, admin, "write_file", {"path": "ed/f.txt", "content": "one two two",
                                             "create_dirs": True}).status_code == 200
    assert call(stack, admin, "edit_file", {"path": "ed/f.txt", "old_text": "two", "new_text": "2"}).status_code == 409
    r = call(stack, admin, "edit_file", {"path": "ed/f.txt", "old_text": "one", "new_text": "1"})
    assert r.status_code == 200 and (stack.data_dir / "sandbox/ed/f.txt").read_text() == "1 two two"
    listing = call(stack, keys["guest"], "list_directory", {"path": "ed"}).json()["result"]["entries"]
    assert listing == [{"name": "f.txt", "type": "file", "size": 9}]
    found = call(stack, keys["guest"], "search_files", {"pattern": "*.txt", "contains": "two"}).json()
    assert {"path": "ed/f.txt", "lines": [{"line": 1, "text": "1 two two"}]} in found["result"]["matches"]
    info = call(stack, keys["guest"], "file_info", {"path": "ed/f.txt"}).json()["result"]
    assert info["type"] == "file" and len(info["sha256"]) == 64
    assert call(stack, admin, "delete_file", {"path": "ed/f.txt"}).status_code == 200
    assert call(stack, keys["guest"], "system_info").json()["result"]["cpu_count"] >= 1


@pytest.mark.integration
def test_command_runner_and_git(stack, keys):
    dev = keys["developer"]
    r = call(stack, dev, "run_command", {"command": ["cat", "docs/hello.txt"]})
    assert r.status_code == 200 and r.json()["result"]["stdout"] == "hello sandbox\n"
    assert call(stack, dev, "run_command", {"command": "cat /etc/passwd"}).status_code == 403
    assert call(stack, dev, "run_command", {"command": "cat link_out"}).status_code == 403
    assert call(stack, dev, "run_command", {"command": "rm -rf docs"}).status_code == 403
    assert call(stack, dev, "run_command", {"command": "/bin/cat docs/hello.txt"}).status_code == 403
    slow = call(stack, dev, "run_command", {"command": ["tail", "-f", "docs/hello.txt"], "timeout_s": 0.5})
    assert slow.status_code == 504 and slow.json()["error"]["code"] == "command_timeout"
    assert call(stack, keys["guest"], "run_command", {"command": "ls"}).status_code == 403

    assert call(stack, dev, "git_status", {"path": "docs"}).status_code == 400  # not a repository
    repo = stack.data_dir / "sandbox" / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(git + ["init", "-q"], check=True)
    (repo / "a.txt").write_text("a")
    subprocess.run(git + ["add", "a.txt"], check=True)
    subprocess.run(git + ["commit", "-qm", "first commit"], check=True)
    (repo / "b.txt").write_text("b")
    status = call(stack, dev, "git_status", {"path": "repo"}).json()["result"]
    assert status["changes"] == [{"status": "??", "path": "b.txt"}] and not status["clean"]
    log = call(stack, keys["guest"], "git_log", {"path": "repo"}).json()["result"]
    assert [c["subject"] for c in log["commits"]] == ["first commit"]


@pytest.mark.integration
def test_harness_smoke_tools_and_memory_pass(stack):
    results = [*tools_smoke.run_all(stack, phase=3), memory_smoke.check_roundtrip(stack, phase=3)]
    assert [r.status.value for r in results] == ["pass"] * 6, [str(r) for r in results]


def test_issue_9_attacks_over_rest(stack, keys):
    """The rows of issue 9's table that concern the tool server alone, through the real server."""
    dev, guest = keys["developer"], keys["guest"]
    root = stack.data_dir / "sandbox"
    (root / "-x").mkdir(exist_ok=True)
    (root / "list.txt").write_text(f"{stack.data_dir / 'outside' / 'secret.txt'}\0")
    for command in (["cat", "--", "-x/../../../../etc/hostname"], ["ls", "--", "-x/../../../.."],
                    ["wc", "--files0-from=list.txt"]):
        r = call(stack, dev, "run_command", {"command": command})
        assert r.status_code == 403 and SECRET not in r.text, (command, r.text)
    (root / "gitfile").mkdir(exist_ok=True)
    (root / "gitfile" / ".git").write_text(f"gitdir: {os.getcwd()}/.git\n")  # this project's repository
    r = call(stack, guest, "git_log", {"path": "gitfile"})
    assert r.status_code == 403 and "commits" not in r.text
    ready = httpx.get(stack.url("tools") + "/ready").json()
    assert str(stack.data_dir) not in json.dumps(ready)  # no filesystem paths without a key

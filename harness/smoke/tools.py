"""Tools smoke checks (phase 3): the tool server over REST and MCP, its sandbox, RBAC and approvals.

  * ``smoke.tools.read_rest``   — ``POST /tools/read_file`` returns a file an admin wrote first;
  * ``smoke.tools.read_mcp``    — an official MCP client (``mcp`` SDK v1, Streamable HTTP) lists the
                                  tools and calls ``read_file``;
  * ``smoke.tools.escape``      — hostile paths (traversal, absolute, encoded, null byte) are refused;
  * ``smoke.tools.guest_write`` — a guest's ``write_file`` is refused with 403;
  * ``smoke.tools.approval``    — a developer's ``write_file`` is parked (202), an admin approves it,
                                  it runs once and the file holds the content.

Keys are the run's own (``harness.keys.run_keys``: minted with ``suite keys create`` for the run,
revoked when it ends); ``run_all`` passes them to every check.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from typing import Any

import httpx

from harness.coroutines import run_coroutine
from harness.keys import RunKeys, run_keys
from harness.result import CheckResult, Timer
from harness.smoke.http import Check, auth, failed, post_json, skip_below
from suite import services
from suite.settings import Settings

PHASE = services.get("tools").phase  # the stack phase that starts the tools service
SMOKE_FILE = "smoke/hello.txt"
HOSTILE_PATHS = ("../../../../etc/passwd", "/etc/passwd", "%2e%2e/%2e%2e/etc/passwd",
                 "smoke/../../outside.txt", "smoke/\x00.txt")


SmokeKeys = RunKeys  # admin, developer, guest


def _tool(settings: Settings, key: str, name: str, args: dict[str, Any]) -> httpx.Response:
    return post_json(f"{settings.url('tools')}/tools/{name}", args, key)


def _ensure_smoke_file(settings: Settings, keys: SmokeKeys) -> str:
    """Write the file the read checks read (admins write without approval); return its content."""
    content = f"hello from the phase-3 smoke test {uuid.uuid4().hex[:8]}\n"
    resp = _tool(settings, keys.admin, "write_file", {"path": SMOKE_FILE, "content": content, "create_dirs": True})
    if resp.status_code != 200:
        raise RuntimeError(f"admin write_file answered HTTP {resp.status_code}: {resp.text[:300]}")
    return content


def check_read_rest(settings: Settings, keys: SmokeKeys, phase: int) -> CheckResult:
    def body(c: Check) -> CheckResult:
        content = _ensure_smoke_file(settings, keys)
        resp = _tool(settings, keys.developer, "read_file", {"path": SMOKE_FILE})
        got = resp.json().get("result", {}).get("content") if resp.status_code == 200 else None
        return c.result(got == content, detail=f"HTTP {resp.status_code}" + ("" if got == content else f": {resp.text[:300]}"))

    return Check("smoke.tools.read_rest", "POST /tools/read_file (developer key)", "HTTP 200, same content",
                 PHASE).run(phase, body, errors=(httpx.HTTPError, RuntimeError))


async def _mcp_read(url: str, key: str, path: str) -> tuple[list[str], Any]:
    from harness.mcp_client import mcp_session

    async with mcp_session(url, auth(key)) as session:
        tools = await session.list_tools()
        called = await session.call_tool("read_file", {"path": path})
        return [t.name for t in tools.tools], called


def check_read_mcp(settings: Settings, keys: SmokeKeys, phase: int) -> CheckResult:
    def body(c: Check) -> CheckResult:
        content = _ensure_smoke_file(settings, keys)
        names, called = run_coroutine(_mcp_read(settings.url("tools") + "/mcp", keys.developer, SMOKE_FILE))
        got = (called.structuredContent or {}).get("result", {}).get("content")
        ok = "read_file" in names and not called.isError and got == content
        return c.result(ok, detail=f"{len(names)} tools listed; isError={called.isError}")

    # the MCP client raises many kinds; all of them fail the check
    return Check("smoke.tools.read_mcp", "MCP client: list tools, call read_file",
                 "read_file listed; call returns the content", PHASE).run(phase, body, errors=(Exception,))


def check_path_escape(settings: Settings, keys: SmokeKeys, phase: int) -> CheckResult:
    def body(c: Check) -> CheckResult:
        answers = {path: _tool(settings, keys.admin, "read_file", {"path": path}).status_code for path in HOSTILE_PATHS}
        escaped = [p for p, s in answers.items() if s not in (400, 403)]
        return c.result(not escaped, value=len(escaped), unit="count", measured=f"{len(escaped)} escaped",
                        detail=json.dumps({repr(p): s for p, s in answers.items()}))

    return Check("smoke.tools.escape", f"{len(HOSTILE_PATHS)} hostile paths refused", "every one 400/403, none 200",
                 PHASE).run(phase, body)


def check_guest_write(settings: Settings, keys: SmokeKeys, phase: int) -> CheckResult:
    def body(c: Check) -> CheckResult:
        resp = _tool(settings, keys.guest, "write_file", {"path": "smoke/guest.txt", "content": "no"})
        return c.result(resp.status_code == 403, detail=f"HTTP {resp.status_code}: {resp.text[:200]}")

    return Check("smoke.tools.guest_write", "guest write_file refused", "HTTP 403", PHASE).run(phase, body)


def check_approved_write(settings: Settings, keys: SmokeKeys, phase: int) -> CheckResult:
    def body(c: Check) -> CheckResult:
        content = f"approved write {uuid.uuid4().hex[:8]}\n"
        base = settings.url("tools")
        parked = _tool(settings, keys.developer, "write_file",
                       {"path": "smoke/approved.txt", "content": content, "create_dirs": True})
        if parked.status_code != 202:
            return c.result(False, detail=f"first call HTTP {parked.status_code}")
        approval_id = parked.json()["approval_id"]
        approved = post_json(f"{base}/approvals/{approval_id}/approve", {"reason": "smoke test"}, keys.admin)
        again = post_json(f"{base}/approvals/{approval_id}/approve", {}, keys.admin)
        read = _tool(settings, keys.developer, "read_file", {"path": "smoke/approved.txt"})
        status = approved.json().get("status") if approved.status_code == 200 else None
        got = read.json().get("result", {}).get("content") if read.status_code == 200 else None
        ok = status == "executed" and again.status_code == 409 and got == content
        return c.result(ok, detail=f"{approval_id}: approve HTTP {approved.status_code} ({status}), "
                                   f"second approve HTTP {again.status_code}, read back "
                                   f"{'ok' if got == content else repr(got)}")

    return Check("smoke.tools.approval", "developer write_file: 202 pending, admin approves, runs once",
                 "202 -> approve 200 (executed) -> file content; second approve 409",
                 PHASE).run(phase, body, errors=(httpx.HTTPError, KeyError, ValueError))


CHECKS = (check_read_rest, check_read_mcp, check_path_escape, check_guest_write, check_approved_write)


def run_all(settings: Settings, phase: int, keys: SmokeKeys | None = None) -> list[CheckResult]:
    """Every tools check, in order; key creation failing fails the checks, not the run."""
    if skipped := skip_below(phase, PHASE, "smoke.tools", "tools smoke checks"):
        return [skipped]
    if keys is None:
        t = Timer()
        try:
            keys = run_keys(settings)
        except (RuntimeError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            return [failed("smoke.tools.keys", "create API keys with the suite CLI", t, exc,
                           "3 keys (admin, developer, guest)")]
    return [check(settings, keys, phase) for check in CHECKS]

"""Phase-3 smoke checks: the tools service (REST and MCP) and the memory service.

Checks, each returning a ``CheckResult``:
  * ``smoke.tools.read_rest``   — ``POST /tools/read_file`` returns a file an admin wrote first;
  * ``smoke.tools.read_mcp``    — an official MCP client (``mcp`` SDK v1, Streamable HTTP) lists the
                                  tools and calls ``read_file``;
  * ``smoke.tools.escape``      — hostile paths (traversal, absolute, encoded, null byte) are refused;
  * ``smoke.tools.guest_write`` — a guest's ``write_file`` is refused with 403;
  * ``smoke.tools.approval``    — a developer's ``write_file`` is parked (202), an admin approves it,
                                  it runs once and the file holds the content;
  * ``smoke.memory.roundtrip``  — a note saved in the memory API is found by full-text search.

Keys: the harness makes its own keys by running the CLI in a subprocess,
``python -m suite.cli keys create --role ROLE --json`` with ``SUITE_DATA_DIR`` (and the security DB
path, if set) of the stack under test — the same way an operator would. No admin bootstrap endpoint
exists, on purpose: creating keys needs access to the data dir, not the network. ``make_keys`` does
it once; pass its result to every check (or let ``run_all`` do it).

Everything else talks HTTP/MCP to ``settings.url("tools")`` / ``settings.url("memory")``; no service
module is imported.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from harness.result import CheckResult, Timer
from suite.settings import Settings

PHASE = "smoke"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
SMOKE_FILE = "smoke/hello.txt"
HOSTILE_PATHS = ("../../../../etc/passwd", "/etc/passwd", "%2e%2e/%2e%2e/etc/passwd",
                 "smoke/../../outside.txt", "smoke/\x00.txt")


@dataclass(frozen=True)
class SmokeKeys:
    admin: str
    developer: str
    guest: str


def _cli_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ, SUITE_DATA_DIR=str(settings.data_dir))
    if settings.tools.security_db:
        env["SUITE_TOOLS__SECURITY_DB"] = str(settings.tools.security_db)
    return env


def make_key(settings: Settings, role: str, name: str = "smoke-phase3") -> str:
    """A new API key of ``role``, made by the ``suite keys create`` CLI (raises if it fails)."""
    proc = subprocess.run(
        [sys.executable, "-m", "suite.cli", "keys", "create", "--role", role, "--name", name, "--json"],
        capture_output=True, text=True, timeout=60, env=_cli_env(settings))
    if proc.returncode != 0:
        raise RuntimeError(f"suite keys create --role {role} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["key"]


def make_keys(settings: Settings) -> SmokeKeys:
    return SmokeKeys(*(make_key(settings, role) for role in ("admin", "developer", "guest")))


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _tool(settings: Settings, key: str, name: str, args: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{settings.url('tools')}/tools/{name}", json=args, headers=_auth(key), timeout=TIMEOUT)


def _result(check_id: str, title: str, ok: bool, t: Timer, **fields: Any) -> CheckResult:
    fields.setdefault("measured", f"{t.stop() * 1000:.1f} ms")
    return CheckResult(check_id, title, PHASE, "pass" if ok else "fail", **t.fields(), **fields)


def _failed(check_id: str, title: str, t: Timer, exc: Exception, target: str) -> CheckResult:
    return _result(check_id, title, False, t, target=target, detail=f"{type(exc).__name__}: {exc}")


def _ensure_smoke_file(settings: Settings, keys: SmokeKeys) -> str:
    """Write the file the read checks read (admins write without approval); return its content."""
    content = f"hello from the phase-3 smoke test {uuid.uuid4().hex[:8]}\n"
    resp = _tool(settings, keys.admin, "write_file", {"path": SMOKE_FILE, "content": content, "create_dirs": True})
    if resp.status_code != 200:
        raise RuntimeError(f"admin write_file answered HTTP {resp.status_code}: {resp.text[:300]}")
    return content


def check_read_rest(settings: Settings, keys: SmokeKeys) -> CheckResult:
    cid, title, target = "smoke.tools.read_rest", "POST /tools/read_file (developer key)", "HTTP 200, same content"
    t = Timer()
    try:
        content = _ensure_smoke_file(settings, keys)
        resp = _tool(settings, keys.developer, "read_file", {"path": SMOKE_FILE})
    except (httpx.HTTPError, RuntimeError) as exc:
        return _failed(cid, title, t, exc, target)
    got = resp.json().get("result", {}).get("content") if resp.status_code == 200 else None
    return _result(cid, title, got == content, t, target=target,
                   detail=f"HTTP {resp.status_code}" + ("" if got == content else f": {resp.text[:300]}"))


async def _mcp_read(url: str, key: str, path: str) -> tuple[list[str], Any]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async with streamablehttp_client(url, headers=_auth(key)) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            result = await session.call_tool("read_file", {"path": path})
            return [t.name for t in tools.tools], result


def run_coroutine(coro):
    """``asyncio.run`` that also works inside a Jupyter kernel, whose own event loop is running:
    there the coroutine runs on a fresh loop in a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def check_read_mcp(settings: Settings, keys: SmokeKeys) -> CheckResult:
    cid, title = "smoke.tools.read_mcp", "MCP client: list tools, call read_file"
    target = "read_file listed; call returns the content"
    t = Timer()
    try:
        content = _ensure_smoke_file(settings, keys)
        names, result = run_coroutine(_mcp_read(settings.url("tools") + "/mcp", keys.developer, SMOKE_FILE))
    except Exception as exc:  # the MCP client raises many kinds; all of them fail the check
        return _failed(cid, title, t, exc, target)
    got = (result.structuredContent or {}).get("result", {}).get("content")
    ok = "read_file" in names and not result.isError and got == content
    return _result(cid, title, ok, t, target=target,
                   detail=f"{len(names)} tools listed; isError={result.isError}")


def check_path_escape(settings: Settings, keys: SmokeKeys) -> CheckResult:
    cid, title = "smoke.tools.escape", f"{len(HOSTILE_PATHS)} hostile paths refused"
    target = "every one 400/403, none 200"
    t = Timer()
    answers = {}
    try:
        for path in HOSTILE_PATHS:
            answers[path] = _tool(settings, keys.admin, "read_file", {"path": path}).status_code
    except httpx.HTTPError as exc:
        return _failed(cid, title, t, exc, target)
    escaped = [p for p, s in answers.items() if s not in (400, 403)]
    return _result(cid, title, not escaped, t, target=target, measured=f"{len(escaped)} escaped",
                   detail=json.dumps({repr(p): s for p, s in answers.items()}))


def check_guest_write(settings: Settings, keys: SmokeKeys) -> CheckResult:
    cid, title, target = "smoke.tools.guest_write", "guest write_file refused", "HTTP 403"
    t = Timer()
    try:
        resp = _tool(settings, keys.guest, "write_file", {"path": "smoke/guest.txt", "content": "no"})
    except httpx.HTTPError as exc:
        return _failed(cid, title, t, exc, target)
    return _result(cid, title, resp.status_code == 403, t, target=target,
                   detail=f"HTTP {resp.status_code}: {resp.text[:200]}")


def check_approved_write(settings: Settings, keys: SmokeKeys) -> CheckResult:
    cid, title = "smoke.tools.approval", "developer write_file: 202 pending, admin approves, runs once"
    target = "202 -> approve 200 (executed) -> file content; second approve 409"
    t = Timer()
    content = f"approved write {uuid.uuid4().hex[:8]}\n"
    base = settings.url("tools")
    try:
        parked = _tool(settings, keys.developer, "write_file",
                       {"path": "smoke/approved.txt", "content": content, "create_dirs": True})
        if parked.status_code != 202:
            return _result(cid, title, False, t, target=target, detail=f"first call HTTP {parked.status_code}")
        approval_id = parked.json()["approval_id"]
        approved = httpx.post(f"{base}/approvals/{approval_id}/approve", headers=_auth(keys.admin),
                              json={"reason": "smoke test"}, timeout=TIMEOUT)
        again = httpx.post(f"{base}/approvals/{approval_id}/approve", headers=_auth(keys.admin), timeout=TIMEOUT)
        read = _tool(settings, keys.developer, "read_file", {"path": "smoke/approved.txt"})
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        return _failed(cid, title, t, exc, target)
    status = approved.json().get("status") if approved.status_code == 200 else None
    got = read.json().get("result", {}).get("content") if read.status_code == 200 else None
    ok = status == "executed" and again.status_code == 409 and got == content
    return _result(cid, title, ok, t, target=target,
                   detail=f"{approval_id}: approve HTTP {approved.status_code} ({status}), "
                          f"second approve HTTP {again.status_code}, read back {'ok' if got == content else got!r}")


def check_memory_roundtrip(settings: Settings) -> CheckResult:
    cid, title, target = "smoke.memory.roundtrip", "memory: save a note, find it by search", "note found"
    t = Timer()
    token = f"smoketoken{uuid.uuid4().hex[:10]}"
    base = settings.url("memory")
    try:
        saved = httpx.post(f"{base}/v1/memory/notes", timeout=TIMEOUT,
                           json={"project": "smoke", "text": f"phase 3 smoke note {token}", "tags": ["smoke"]})
        found = httpx.get(f"{base}/v1/memory/search", params={"q": token, "project": "smoke"}, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        return _failed(cid, title, t, exc, target)
    note_id = saved.json().get("id") if saved.status_code == 201 else None
    ids = [r["id"] for r in found.json().get("results", [])] if found.status_code == 200 else []
    return _result(cid, title, note_id is not None and note_id in ids, t, target=target,
                   detail=f"save HTTP {saved.status_code} (id {note_id}), search HTTP {found.status_code} "
                          f"({len(ids)} hits)")


def run_all(settings: Settings, keys: SmokeKeys | None = None) -> list[CheckResult]:
    """Every phase-3 check, in order; key creation failing fails the tool checks, not the run."""
    results: list[CheckResult] = []
    if keys is None:
        t = Timer()
        try:
            keys = make_keys(settings)
        except (RuntimeError, subprocess.SubprocessError, ValueError, KeyError) as exc:
            results.append(_failed("smoke.tools.keys", "create API keys with the suite CLI", t, exc,
                                   "3 keys (admin, developer, guest)"))
    if keys is not None:
        for check in (check_read_rest, check_read_mcp, check_path_escape, check_guest_write,
                      check_approved_write):
            results.append(check(settings, keys))
    results.append(check_memory_roundtrip(settings))
    return results

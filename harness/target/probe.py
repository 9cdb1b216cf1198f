"""Reaching a target: is each part listening, does it accept the key it is given, what version is it.

``reach(target)`` is the bring-up stage of a run against a stack it did not start: one result per
part (reachable, the key accepted, the version it tells), and ``versions.json`` in the run directory
for the report. Versions come from where the software tells them: llama-server's ``/props``
(``build_info``) and ``/v1/models``, LiteLLM's ``/health/readiness/details`` (``litellm_version``, with
the key), Qdrant's ``/`` (``version``), TEI's ``/info``, an MCP server's ``initialize`` answer (``serverInfo``), our
services' ``/v1/models`` or ``/openapi.json``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from typing import Any

import httpx

from harness.httpclient import verify
from harness.result import CheckResult, Stage, Status, Timer
from harness.target import Part, Target, TargetError, headers

TIMEOUT = httpx.Timeout(15.0, connect=5.0)
# A GET that needs the key, per kind: the key is accepted when it answers 2xx with the key
AUTH_PROBE = {"llama-server": "/props", "litellm": "/v1/models", "qdrant": "/collections", "tei": "/info",
              "infinity": "/models", "openai": "/v1/models"}


def listening(host: str, port: int, timeout_s: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def unreachable(target: Target, wait_s: float = 0.0, timeout_s: float = 2.0) -> list[Part]:
    """The parts whose host:port accepts no TCP connection, tried every half second for ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        down = [p for p in target.parts() if not listening(p.host, p.port, timeout_s)]
        if not down or time.monotonic() >= deadline:
            return down
        time.sleep(0.5)


def mcp_tools(url: str, auth: dict[str, str]) -> tuple[list[str], str]:
    """(tool names, "server NAME VERSION") from an MCP client session on ``url``."""
    from harness.coroutines import run_coroutine
    from harness.mcp_client import mcp_session

    async def go() -> tuple[list[str], str]:
        async with mcp_session(url, auth) as session:
            tools = await session.list_tools()
            info = getattr(session, "server_info", None) or getattr(session, "_server_info", None)
            return [t.name for t in tools.tools], _server_info(session, info)

    return run_coroutine(go())


def _server_info(session: Any, info: Any) -> str:
    if info is None:
        result = getattr(session, "initialize_result", None)
        info = getattr(result, "serverInfo", None)
    if info is None:
        return "MCP server"
    return f"{getattr(info, 'name', 'MCP server')} {getattr(info, 'version', '')}".strip()


VERSION_HEADERS = {"x-litellm-version": "LiteLLM"}  # software that tells its version in a header


def _get(part: Part, path: str, auth: dict[str, str]) -> httpx.Response | None:
    try:
        return httpx.get(part.url(path), headers=auth, timeout=TIMEOUT, verify=verify())  # the stack's CA for https
    except httpx.HTTPError:
        return None


def _json(part: Part, path: str, auth: dict[str, str]) -> tuple[int | None, Any]:
    r = _get(part, path, auth)
    if r is None:
        return None, None
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, None


def version_of(part: Part, auth: dict[str, str]) -> str:
    """What the part says it is ("" when it tells nothing we can read)."""
    found = []
    for path in part.defaults.version:
        r = _get(part, path, auth)
        if r is None or r.status_code != 200:
            continue
        found += [f"{name} {r.headers[h]}" for h, name in VERSION_HEADERS.items() if r.headers.get(h)]
        try:
            body = r.json()
        except ValueError:
            continue
        text = _version_text(path, body)
        if text:
            found.append(text)
    return "; ".join(dict.fromkeys(found))


def _version_text(path: str, body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    if path == "/props":
        build = body.get("build_info") or ""
        model = (body.get("model_path") or "").rsplit("/", 1)[-1]
        return " ".join(x for x in (f"llama.cpp {build}" if build else "", f"model {model}" if model else "") if x)
    if path.startswith("/health/readiness"):  # LiteLLM 1.108+: the version only in the keyed details
        return f"LiteLLM {body['litellm_version']}" if body.get("litellm_version") else ""
    if path == "/" and body.get("version"):
        return f"{body.get('title', 'qdrant')} {body['version']}"
    if path == "/info":
        return " ".join(str(body.get(k, "")) for k in ("model_id", "version")).strip()
    if path == "/openapi.json":
        info = body.get("info") or {}
        return f"{info.get('title', '')} {info.get('version', '')}".strip()
    if path in ("/v1/models", "/models"):
        ids = [m.get("id") for m in body.get("data", []) if isinstance(m, dict) and m.get("id")]
        return "models " + ", ".join(ids[:8]) if ids else ""
    return ""


def check_key(target: Target, part: Part) -> CheckResult:
    """The part accepts the key the target gives it (a wrong or missing key is a failure that says so)."""
    cid, title = f"bringup.{part.name}.key", f"{part.name}: accepts its key"
    t = Timer()
    if part.auth is None:
        return CheckResult.skipped(cid, title, Stage.BRING_UP, target="2xx with the key", measured="no auth",
                           detail="the target gives this part no key; the security review judges whether it "
                                  "is open", **t.fields())
    try:
        auth = headers(target, part, "guest")
    except (TargetError, RuntimeError, OSError) as exc:
        return CheckResult(cid, title, Stage.BRING_UP, Status.FAIL, target="2xx with the key", measured="no key",
                           detail=str(exc), **t.fields())
    source = part.auth.describe()
    if part.kind == "mcp":
        try:
            names, _ = mcp_tools(part.url(part.mcp_path), auth)
            return CheckResult(cid, title, Stage.BRING_UP, Status.PASS, target="MCP handshake with the key",
                               measured=f"{len(names)} tools", detail=source, **t.fields())
        except Exception as exc:  # the MCP client raises many kinds
            return CheckResult(cid, title, Stage.BRING_UP, Status.FAIL, target="MCP handshake with the key",
                               measured="refused", detail=f"{source}: {type(exc).__name__}: {exc}"[:400], **t.fields())
    path = AUTH_PROBE.get(part.kind) or ("/v1/models" if part.models else "/openapi.json")
    r = _get(part, path, auth)
    status = r.status_code if r is not None else None
    ok = status is not None and 200 <= status < 300
    why = ("no answer" if r is None else f"HTTP {status}" + (
        f": the key from {source} is refused (wrong key, or one of another stack): {r.text[:160]}"
        if 400 <= r.status_code < 500 else f": {r.text[:160]}"))
    return CheckResult(cid, title, Stage.BRING_UP, Status.PASS if ok else Status.FAIL,
                       target=f"GET {path} with the key: 2xx", measured=f"HTTP {status}" if status else "no answer",
                       detail=source if ok else why, **t.fields())


def reach(target: Target, parts: Iterable[Part] | None = None) -> tuple[list[CheckResult], dict[str, str]]:
    """Per part: reachable (with the version it tells) and its key accepted; and the versions."""
    results, versions = [], {}
    for part in parts or target.parts():
        t = Timer()
        up = listening(part.host, part.port)
        version = ""
        if up:
            try:
                auth = headers(target, part, "guest")
            except (TargetError, RuntimeError, OSError):
                auth = {}
            version = mcp_version(part, auth) if part.kind == "mcp" else version_of(part, auth)
        versions[part.name] = version
        results.append(CheckResult(
            f"bringup.{part.name}.reach", f"{part.name} ({part.defaults.label or part.kind}) reachable",
            Stage.BRING_UP, Status.PASS if up else Status.FAIL, target=f"{part.host}:{part.port} accepts a connection",
            measured=version or ("reachable" if up else "not reachable"),
            detail=f"{part.base_url}" + ("" if up else ": nothing answers there; start it, or fix base_url in the "
                                         "target file"), **t.fields()))
        if up:
            results.append(check_key(target, part))
    return results, versions


def mcp_version(part: Part, auth: dict[str, str]) -> str:
    try:
        names, info = mcp_tools(part.url(part.mcp_path), auth)
    except Exception:  # told by check_key and the health probes
        return ""
    return f"{info} ({len(names)} tools)"

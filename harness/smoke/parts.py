"""Smoke checks of a target's parts by role: the gateway's chat and code models, its failover, the
embedding server, the MCP server. Our own suite and a stack from a target file take the same checks
(``harness.target``); what only a part of kind ``suite`` tells (the ``x-suite-upstream`` header) is
checked where it is told. A role the target lacks is ``skip`` with "not applicable: no ... in the
target"; a check that would change a part the target does not allow to be changed says so.
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx

from harness.result import CheckResult, Stage, Status, Timer
from harness.smoke.http import TIMEOUT, elapsed_ms, error_text, failed, result
from harness.target import Target, TargetError, headers
from harness.target import control as ctl
from harness.vectors import cosine, norm

# the headers a known gateway says which upstream answered with (and that it fell back)
UPSTREAM_HEADERS = ("x-suite-upstream", "x-litellm-model-api-base", "x-litellm-model-id")
FALLBACK_HEADERS = ("x-suite-fallback-from", "x-litellm-attempted-fallbacks")
PAIR = ("A cat is sitting on the mat.", "A kitten sits on a rug.")


def not_applicable(cid: str, title: str, why: str) -> CheckResult:
    return CheckResult.skipped(cid, title, Stage.SMOKE, measured="not applicable", detail=why)


def _post(target: Target, part, path: str, body: dict[str, Any], role: str = "guest") -> httpx.Response:
    from harness.httpclient import client

    return client().post(part.url(path), json=body, timeout=TIMEOUT, headers=headers(target, part, role))


def _text_of(body: dict[str, Any]) -> str:
    choice = (body.get("choices") or [{}])[0]
    return (choice.get("message") or {}).get("content") or choice.get("text") or ""


def _upstream(resp: httpx.Response) -> str:
    return next((f"{h} {resp.headers[h]}" for h in UPSTREAM_HEADERS if resp.headers.get(h)), "")


def _completion(target: Target, cid: str, title: str, path: str, body: dict[str, Any], model: str) -> CheckResult:
    gw = target.gateway
    goal = f"HTTP 200 with text from model '{model}'"
    t = Timer()
    try:
        resp = _post(target, gw, path, body)
    except (httpx.HTTPError, TargetError) as exc:
        return failed(cid, title, t, exc, goal)
    ms = elapsed_ms(t)
    if resp.status_code != 200:
        return result(cid, title, Status.FAIL, t, target=goal, value=ms, unit="ms",
                      detail=f"HTTP {resp.status_code}: {error_text(resp)}")
    text = _text_of(resp.json())
    status = Status.PASS if text.strip() else Status.FAIL
    detail = f"text {text.strip()[:120]!r}"
    if gw.kind == "suite":  # our gateway says which upstream answered: a fallback is a warning
        upstream = resp.headers.get("x-suite-upstream")
        if status is Status.PASS and upstream != model:
            status = Status.WARN
        detail = f"upstream {upstream}, " + detail
    elif up := _upstream(resp):
        detail = f"{up}, " + detail
    return result(cid, title, status, t, target=goal, value=ms, unit="ms", detail=detail)


def check_chat(target: Target, max_tokens: int = 16) -> CheckResult:
    """A chat completion through the gateway (its ``chat_model``)."""
    cid, title = "smoke.gateway.chat", "chat completion through the gateway"
    if target.gateway is None:
        return not_applicable(cid, title, target.missing("gateway"))
    model = target.gateway.chat_model
    return _completion(target, cid, title, "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": max_tokens, "temperature": 0.0}, model)


def check_code(target: Target, max_tokens: int = 16) -> CheckResult:
    """A code completion through the gateway (its ``code_model``, ``/v1/completions``)."""
    cid, title = "smoke.gateway.code", "code completion through the gateway"
    if target.gateway is None:
        return not_applicable(cid, title, target.missing("gateway"))
    model = target.gateway.code_model
    return _completion(target, cid, title, "/v1/completions", {
        "model": model, "prompt": "def add(a, b):\n    return", "max_tokens": max_tokens, "temperature": 0.0}, model)


def check_failover(target: Target, wait_s: float = 120.0) -> list[CheckResult]:
    """Stop the server behind the gateway's chat model with its ``kill_command``, ask the gateway for
    chat: it must answer (from its fallback, ``fallbacks`` in the target), then start the server
    again (``restart_command``) and wait until it is ready. Two results: failover, restore."""
    cid, title = "smoke.gateway.failover", "chat upstream stopped: gateway answers via its fallback"
    gw = target.gateway
    if gw is None:
        return [not_applicable(cid, title, target.missing("gateway"))]
    chat = target.inference_for(gw.chat_model)
    fallback = gw.fallbacks.get(gw.chat_model)
    goal = f"HTTP 200 for '{gw.chat_model}' while its server is down" + (f" (answered by '{fallback}')" if fallback else "")
    if chat is None:
        return [not_applicable(cid, title, f"not applicable: no inference part has gateway_model = "
                                           f"'{gw.chat_model}' in the target")]
    if refused := ctl.refusal(target, chat):
        return [CheckResult.skipped(cid, title, Stage.SMOKE, target=goal, measured="not run", detail=refused)]
    t = Timer()
    killed = ctl.kill(chat)
    try:
        gone = ctl.gone_at(chat, time.monotonic() + 30)
        if not killed.ok or gone is None:
            failover = result(cid, title, Status.FAIL, t, target=goal,
                              detail=f"{chat.name} not stopped: {killed.describe()}")
        else:
            failover = _ask_without(target, cid, title, goal, fallback)
    finally:
        restore = _restore(target, chat, wait_s)
    return [failover, restore]


def _ask_without(target: Target, cid: str, title: str, goal: str, fallback: str | None) -> CheckResult:
    gw = target.gateway
    t = Timer()
    try:
        resp = _post(target, gw, "/v1/chat/completions", {
            "model": gw.chat_model, "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8, "temperature": 0.0})
    except httpx.HTTPError as exc:
        return failed(cid, title, t, exc, goal)
    ms = elapsed_ms(t)
    said = [f"{h}: {resp.headers[h]}" for h in (*FALLBACK_HEADERS, *UPSTREAM_HEADERS) if resp.headers.get(h)]
    text = _text_of(resp.json()) if resp.status_code == 200 else ""
    ok = resp.status_code == 200 and bool(text.strip())
    detail = f"HTTP {resp.status_code}" + (f", {'; '.join(said)}" if said else "")
    if resp.status_code != 200:
        detail += f": {error_text(resp)}" + ("" if fallback else "; the target names no fallback for "
                                              f"'{gw.chat_model}' (gateway.fallbacks)")
    return result(cid, title, ok, t, target=goal, value=ms, unit="ms", detail=detail)


def _restore(target: Target, part, wait_s: float) -> CheckResult:
    cid, title, goal = "smoke.gateway.restore", "chat upstream restored", f"{part.name} ready again"
    t = Timer()
    started = ctl.restart(part)
    at = ctl.ready_at(part, time.monotonic() + wait_s)
    how = started.describe() if started else "no restart_command: waited for it to come back by itself"
    if at is None:
        return result(cid, title, Status.FAIL, t, target=goal, detail=f"{how}; not ready within {wait_s:g} s")
    return result(cid, title, True, t, target=goal, value=t.stop(), unit="s", detail=how)


def check_embeddings(target: Target) -> list[CheckResult]:
    """Two texts through the embedding server's OpenAI ``/v1/embeddings`` (its first model): two
    vectors of one size (its ``dimension`` when the target gives one), finite and not zero; the cosine
    of the related pair is shown. And one text through the gateway when it routes embeddings."""
    out = []
    cid, title = "smoke.embed.server", "OpenAI /v1/embeddings at the embedding server"
    emb = target.embedding
    if emb is None:
        out.append(not_applicable(cid, title, target.missing("embedding")))
    else:
        goal = f"2 vectors of {emb.dimension or 'one'} dims, finite, non-zero"
        t = Timer()
        try:
            resp = _post(target, emb, "/v1/embeddings", {"model": (emb.models or ["embedding"])[0], "input": list(PAIR)})
        except (httpx.HTTPError, TargetError) as exc:
            out.append(failed(cid, title, t, exc, goal))
        else:
            out.append(_vectors(cid, title, t, goal, resp, 2, emb.dimension))
    cid, title = "smoke.embed.openai", "OpenAI /v1/embeddings through the gateway"
    gw = target.gateway
    if gw is None or not gw.embedding_model:
        out.append(not_applicable(cid, title, target.missing("gateway") if gw is None else
                                  "not applicable: the target's gateway routes no embedding model (embedding_model)"))
    else:
        goal = "1 vector, finite, non-zero"
        t = Timer()
        try:
            resp = _post(target, gw, "/v1/embeddings", {"model": gw.embedding_model, "input": "안녕하세요"})
        except (httpx.HTTPError, TargetError) as exc:
            out.append(failed(cid, title, t, exc, goal))
        else:
            out.append(_vectors(cid, title, t, goal, resp, 1, target.embedding.dimension if target.embedding else None))
    return out


def _vectors(cid: str, title: str, t: Timer, goal: str, resp: httpx.Response, count: int,
             dimension: int | None) -> CheckResult:
    ms = elapsed_ms(t)
    if resp.status_code != 200:
        return result(cid, title, Status.FAIL, t, target=goal, value=ms, unit="ms",
                      detail=f"HTTP {resp.status_code}: {error_text(resp)}")
    try:
        vecs = [d["embedding"] for d in resp.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return result(cid, title, Status.FAIL, t, target=goal, value=ms, unit="ms",
                      detail=f"not an OpenAI embeddings answer: {resp.text[:200]}")
    dims = [len(v) for v in vecs]
    finite = all(math.isfinite(x) for v in vecs for x in v)
    nonzero = all(norm(v) > 0 for v in vecs) if finite else False
    ok = len(vecs) == count and len(set(dims)) == 1 and finite and nonzero and (dimension is None or dims[0] == dimension)
    detail = f"dims {dims}" + (f", cosine of the related pair {cosine(vecs[0], vecs[1]):.3f}" if count == 2 and ok else "")
    return result(cid, title, ok, t, target=goal, value=ms, unit="ms", detail=detail)


def check_mcp(target: Target) -> list[CheckResult]:
    """An official MCP client on the MCP server: it lists tools; where there is an ``echo`` tool (the
    reference server's), a call comes back with what was sent. Read-only."""
    cid, title = "smoke.mcp.tools", "MCP client: list tools, call echo"
    mcp = target.mcp
    if mcp is None:
        return [not_applicable(cid, title, target.missing("mcp"))]
    goal = "tools listed; echo answers what it was sent"
    t = Timer()
    token = f"smoke-{int(time.time())}"
    try:
        names, called = _mcp_echo(mcp.url(mcp.mcp_path), headers(target, mcp, "developer"), token)
    except Exception as exc:  # the MCP client raises many kinds; each fails the check
        return [failed(cid, title, t, exc, goal)]
    echoed = called is not None and token in called
    ok = bool(names) and (called is None or echoed)
    return [result(cid, title, ok, t, target=goal, measured=f"{len(names)} tools",
                   detail=f"tools: {', '.join(names[:12])}" + ("" if called is None else f"; echo: {called[:120]!r}"))]


def _mcp_echo(url: str, auth: dict[str, str], token: str) -> tuple[list[str], str | None]:
    from harness.coroutines import run_coroutine
    from harness.mcp_client import mcp_session

    async def go() -> tuple[list[str], str | None]:
        async with mcp_session(url, auth) as session:
            names = [t.name for t in (await session.list_tools()).tools]
            if "echo" not in names:
                return names, None
            called = await session.call_tool("echo", {"message": token})
            return names, " ".join(getattr(c, "text", "") for c in called.content)

    return run_coroutine(go())


def not_checked(target: Target, role: str, cid: str, title: str) -> CheckResult:
    """RAG and memory of a target file: absent, or present but not smoke-tested from outside (the
    suite's index/query and notes round trips write through its own contract and keys)."""
    part = getattr(target, role)
    if part is None:
        return not_applicable(cid, title, target.missing(role))
    return not_applicable(cid, title, f"not checked: {part.name} ({part.kind}) is reached by the health probes; "
                                      f"its write round trip runs on the suite's own stack only")

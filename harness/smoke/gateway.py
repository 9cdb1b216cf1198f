"""Gateway smoke checks (phase 1): a chat and a code completion, and a forced failover.

The failover drill stops ``inference-chat`` and starts the phase again through the ``suite`` CLI
(``harness.stack``), the same path as bring-up and teardown, so it works under either backend.
"""

from __future__ import annotations

from typing import Any

import httpx

from harness import stack
from harness.result import CheckResult, Status, Timer
from harness.smoke.http import (
    Check,
    elapsed_ms,
    error_text,
    failed,
    get,
    post_json,
    result,
    run_key,
    skip_below,
)
from suite import services
from suite.settings import Settings

PHASE = services.get("gateway").phase  # the stack phase that starts the gateway service
CHAT_UPSTREAM = "inference-chat"


def _completion(settings: Settings, path: str, body: dict[str, Any]) -> httpx.Response:
    return post_json(settings.url("gateway") + path, body, run_key(settings, "guest"))


def _text_of(body: dict[str, Any]) -> str:
    choice = (body.get("choices") or [{}])[0]
    return (choice.get("message") or {}).get("content") or choice.get("text") or ""


def check_chat(settings: Settings, phase: int, max_tokens: int = 16) -> CheckResult:
    """A chat completion through the gateway (model alias ``chat``)."""
    def body(c: Check) -> CheckResult:
        return _completion_result(c, _completion(settings, "/v1/chat/completions", {
            "model": "chat", "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
            "max_tokens": max_tokens, "temperature": 0.0}), expect_upstream="chat")

    return Check("smoke.gateway.chat", "chat completion through the gateway", _served_by("chat"),
                 PHASE).run(phase, body)


def check_code(settings: Settings, phase: int, max_tokens: int = 16) -> CheckResult:
    """A code completion through the gateway (model alias ``code``, ``/v1/completions``)."""
    def body(c: Check) -> CheckResult:
        return _completion_result(c, _completion(settings, "/v1/completions", {
            "model": "code", "prompt": "def add(a, b):\n    return", "max_tokens": max_tokens,
            "temperature": 0.0}), expect_upstream="code")

    return Check("smoke.gateway.code", "code completion through the gateway", _served_by("code"),
                 PHASE).run(phase, body)


def _served_by(upstream: str) -> str:
    return f"HTTP 200, text, served by '{upstream}'"


def _completion_result(c: Check, resp: httpx.Response, expect_upstream: str) -> CheckResult:
    ms = elapsed_ms(c.timer)
    if resp.status_code != 200:
        return c.result(Status.FAIL, value=ms, unit="ms", detail=f"HTTP {resp.status_code}: {error_text(resp)}")
    text = _text_of(resp.json())
    upstream = resp.headers.get("x-suite-upstream")
    # A fallback still answers, but the model asked for did not: worth a warning, not a failure.
    status = Status.PASS if text.strip() and upstream == expect_upstream else (
        Status.WARN if text.strip() else Status.FAIL)
    return c.result(status, value=ms, unit="ms", detail=f"upstream {upstream}, text {text.strip()[:120]!r}")


def check_failover(settings: Settings, phase: int) -> list[CheckResult]:
    """Stop ``inference-chat``, ask the gateway for ``chat`` (it must answer from code, marked with
    ``x-suite-fallback-from: chat``), then bring the phase back up. Two results: failover, restore."""
    cid, title = "smoke.gateway.failover", "chat upstream stopped: gateway answers via code"
    target = "HTTP 200 from code, x-suite-fallback-from: chat"
    if skipped := skip_below(phase, PHASE, cid, title):
        return [skipped]
    t = Timer()
    try:
        running = stack.running(settings)
        if CHAT_UPSTREAM not in running:
            return [result(cid, title, Status.SKIP, t, target=target, measured="not run",
                           detail=f"{CHAT_UPSTREAM} is not running under the {settings.backend} backend "
                                  f"with data dir {settings.data_dir}; nothing to stop")]
        exit_code = stack.down([CHAT_UPSTREAM], settings)
    except (OSError, RuntimeError, ValueError) as exc:
        return [failed(cid, title, t, exc, target)]
    try:
        if exit_code != 0:
            failover = result(cid, title, Status.FAIL, t, target=target,
                              detail=f"suite down {CHAT_UPSTREAM} exited {exit_code}")
        else:
            failover = _ask_without_chat(cid, title, t, target, settings)
    finally:
        restore = _restore(settings, phase)
    return [failover, restore]


def _ask_without_chat(cid: str, title: str, t: Timer, target: str, settings: Settings) -> CheckResult:
    t_req = Timer()
    try:
        resp = _completion(settings, "/v1/chat/completions", {
            "model": "chat", "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8, "temperature": 0.0})
    except httpx.HTTPError as exc:
        return result(cid, title, Status.FAIL, t, target=target, value=elapsed_ms(t_req), unit="ms",
                      detail=f"{type(exc).__name__}: {exc}")
    ms = elapsed_ms(t_req)
    fallback = resp.headers.get("x-suite-fallback-from")
    upstream = resp.headers.get("x-suite-upstream")
    ok = resp.status_code == 200 and fallback == "chat" and upstream == "code"
    return result(cid, title, ok, t, target=target, value=ms, unit="ms",
                  detail=f"HTTP {resp.status_code}, upstream {upstream}, fallback-from {fallback}"
                         + ("" if resp.status_code == 200 else f": {error_text(resp)}"))


def _restore(settings: Settings, phase: int) -> CheckResult:
    cid, title, target = "smoke.gateway.restore", "chat upstream restored", f"{CHAT_UPSTREAM} ready again"
    t = Timer()
    try:
        started = stack.up(phase, settings)
        ready = get(settings.url(CHAT_UPSTREAM) + "/ready")
    except (OSError, RuntimeError, ValueError, httpx.HTTPError) as exc:  # reported; later steps still run
        return failed(cid, title, t, exc, target)
    if started.exit_code != 0:
        return result(cid, title, Status.FAIL, t, target=target,
                      detail=f"suite up --phase {phase} exited {started.exit_code}: "
                             + "\n".join(started.lines[-10:]))
    return result(cid, title, ready.status_code == 200, t, target=target, value=t.stop(), unit="s",
                  detail=f"started {', '.join(started.started) or 'nothing'}; /ready HTTP {ready.status_code}")

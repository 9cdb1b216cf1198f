"""What every smoke check shares: one HTTP timeout policy, JSON POSTs, the service's error message,
the result builder, and the ``skip`` for a check whose services are not in the stack's phase."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from harness.httpclient import client
from harness.keys import bearer, run_keys
from harness.result import CheckResult, Stage, Status, Timer
from suite.settings import Settings

# One policy for every smoke request: a generous read timeout, because a RAG answer or a chat
# completion from a CPU model can take minutes on a busy 2-core box; connecting must be quick.
TIMEOUT = httpx.Timeout(180.0, connect=5.0)


auth = bearer  # the name the smoke checks use


def run_key(settings: Settings, role: str = "developer") -> str:
    """The run's key of ``role`` (harness.keys): what smoke requests authenticate with."""
    return run_keys(settings).for_role(role)


def post_json(url: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return client().post(url, json=body, timeout=TIMEOUT, headers=auth(key) if key else None)


def get(url: str, key: str | None = None, **params: Any) -> httpx.Response:
    return client().get(url, params=params or None, timeout=TIMEOUT, headers=auth(key) if key else None)


def error_text(resp: httpx.Response) -> str:
    """The message of the service's error body, else the start of the raw body."""
    try:
        return str(resp.json()["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def elapsed_ms(t: Timer) -> float:
    return round(t.stop() * 1000, 1)


def result(check_id: str, title: str, status: Status | bool, t: Timer, **fields: Any) -> CheckResult:
    """A smoke ``CheckResult`` timed by ``t``; ``status`` may be a bool (pass / fail). Without a
    value of its own, the measurement is the time since ``t`` started, in ms."""
    if isinstance(status, bool):
        status = Status.PASS if status else Status.FAIL
    if "value" not in fields and "measured" not in fields:
        fields.update(value=elapsed_ms(t), unit="ms")
    return CheckResult(check_id, title, Stage.SMOKE, status, **t.fields(), **fields)


def failed(check_id: str, title: str, t: Timer, exc: BaseException, target: str) -> CheckResult:
    """The failed result of a check whose request raised (nothing was measured)."""
    return result(check_id, title, Status.FAIL, t, target=target, measured="no answer",
                  detail=f"{type(exc).__name__}: {exc}")


def skip_below(phase: int, needed: int, check_id: str, title: str) -> CheckResult | None:
    """A smoke ``skip`` when the stack's phase lacks the services a check needs, else None."""
    return CheckResult.below_phase(phase, needed, check_id, title, Stage.SMOKE)


class Check:
    """One smoke check: its id, title, target and the phase whose services it needs.

    ``run(phase, body)`` is the frame every check shares: a ``skip`` below the phase, the timer
    started, ``body(check)`` run, and a request that raised one of ``errors`` turned into the failed
    result (nothing measured). The body builds its result with ``check.result(...)`` (the target and
    the time since the start filled in) or ``check.post_ok(...)``.
    """

    def __init__(self, check_id: str, title: str, target: str, needs_phase: int) -> None:
        self.id, self.title, self.target, self.needs_phase = check_id, title, target, needs_phase
        self.timer = Timer()

    def run(self, phase: int, body: Callable[[Check], CheckResult],
            errors: tuple[type[BaseException], ...] = (httpx.HTTPError,)) -> CheckResult:
        if skipped := skip_below(phase, self.needs_phase, self.id, self.title):
            return skipped
        self.timer = Timer()
        try:
            return body(self)
        except errors as exc:
            return self.failed(exc)

    def result(self, status: Status | bool, **fields: Any) -> CheckResult:
        fields.setdefault("target", self.target)
        return result(self.id, self.title, status, self.timer, **fields)

    def failed(self, exc: BaseException) -> CheckResult:
        return failed(self.id, self.title, self.timer, exc, self.target)

    def post_ok(self, url: str, body: dict[str, Any], key: str | None = None
                ) -> tuple[dict[str, Any], float, CheckResult | None]:
        """``post_ok`` of this check: ``(answer, elapsed ms, None)`` or the failed result."""
        return post_ok(self.id, self.title, self.timer, self.target, url, body, key)


def post_ok(check_id: str, title: str, t: Timer, target: str, url: str, body: dict[str, Any],
            key: str | None = None) -> tuple[dict[str, Any], float, CheckResult | None]:
    """POST and read the JSON answer: ``(body, elapsed ms, None)``, or the failed result on a
    transport error or a non-200 answer."""
    try:
        resp = post_json(url, body, key)
    except httpx.HTTPError as exc:
        return {}, 0.0, failed(check_id, title, t, exc, target)
    ms = elapsed_ms(t)
    if resp.status_code != 200:
        return {}, ms, result(check_id, title, Status.FAIL, t, target=target, value=ms, unit="ms",
                              detail=f"HTTP {resp.status_code}: {error_text(resp)}")
    return resp.json(), ms, None

"""Health checks: liveness then readiness of every part of a target, retried inside a start period.

The target is our own suite of a phase (its services' ``/health`` and ``/ready``) or a stack from a
target file (each part's paths, defaults per kind: llama-server ``/health``, LiteLLM
``/health/liveliness`` + ``/health/readiness``, Qdrant ``/healthz`` + ``/readyz``; an MCP server is
alive when ``/mcp`` answers HTTP and ready when an MCP client completes its handshake and lists
tools). Probes retry with exponential backoff until the start period ends (services that are still
loading models are not failures yet); each result carries the latency of the probe that decided it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from harness.httpclient import client
from harness.result import CheckResult, Stage, Status, now_iso
from harness.target import Part, Target, suite_target
from harness.target import headers as target_headers
from suite.settings import Settings


@dataclass
class ProbeOutcome:
    ok: bool
    status: int | None
    latency_ms: float
    attempts: int
    detail: str


Probe = Callable[[], ProbeOutcome]


def _get(url: str, timeout_s: float, headers: dict[str, str] | None = None) -> Callable[[int], ProbeOutcome]:
    def once(attempts: int) -> ProbeOutcome:
        t0 = time.perf_counter()
        try:
            r = client().get(url, timeout=timeout_s, headers=headers)
        except httpx.HTTPError as exc:
            return ProbeOutcome(False, None, (time.perf_counter() - t0) * 1000, attempts,
                                f"{type(exc).__name__}: {exc}"[:300])
        return ProbeOutcome(r.status_code == 200, r.status_code, (time.perf_counter() - t0) * 1000, attempts,
                            r.text[:300])
    return once


def retry(once: Callable[[int], ProbeOutcome], start_period_s: float, first_delay_s: float = 0.25,
          max_delay_s: float = 4.0) -> ProbeOutcome:
    """``once(attempt)`` until it succeeds or the start period is over (backoff between tries)."""
    deadline = time.monotonic() + start_period_s
    delay, attempts = first_delay_s, 0
    while True:
        attempts += 1
        outcome = once(attempts)
        if outcome.ok or time.monotonic() + delay > deadline:
            return outcome
        time.sleep(delay)
        delay = min(delay * 2, max_delay_s)


def probe_until(url: str, start_period_s: float, timeout_s: float = 10.0,
                first_delay_s: float = 0.25, max_delay_s: float = 4.0) -> ProbeOutcome:
    """GET ``url`` until it answers 200 or the start period is over (backoff between tries)."""
    return retry(_get(url, timeout_s), start_period_s, first_delay_s, max_delay_s)


def _mcp_alive(url: str, timeout_s: float) -> Callable[[int], ProbeOutcome]:
    """Any HTTP answer from the MCP endpoint (a GET without a session is refused, but answered)."""
    get = _get(url, timeout_s)

    def once(attempts: int) -> ProbeOutcome:
        p = get(attempts)
        return ProbeOutcome(p.status is not None, p.status, p.latency_ms, attempts, p.detail)
    return once


def _mcp_ready(url: str, headers: Callable[[], dict[str, str]]) -> Callable[[int], ProbeOutcome]:
    """An MCP client's handshake and tool list (``mcp`` SDK, Streamable HTTP); the client's imports
    are done before the probe is timed (seconds on a busy box, none of them the server's)."""
    from mcp.client import streamable_http  # noqa: F401

    from harness.target.probe import mcp_tools

    def once(attempts: int) -> ProbeOutcome:
        t0 = time.perf_counter()
        try:
            names, info = mcp_tools(url, headers())
        except Exception as exc:  # the MCP client raises many kinds; each is a failed probe
            return ProbeOutcome(False, None, (time.perf_counter() - t0) * 1000, attempts,
                                f"MCP handshake failed: {type(exc).__name__}: {exc}"[:300])
        return ProbeOutcome(True, 200, (time.perf_counter() - t0) * 1000, attempts,
                            f"{info}: {len(names)} tools")
    return once


def check_part(target: Target, part: Part, start_period_s: float = 60.0,
               max_ready_ms: float = 5000.0) -> list[CheckResult]:
    """Two results for one part: liveness and readiness (the deep probe, judged against a time)."""
    if part.kind == "mcp":
        url = part.url(part.mcp_path)
        probes = (("health", url, _mcp_alive(url, 10.0), None),
                  ("ready", url + " (MCP handshake)", _mcp_ready(url, lambda: target_headers(target, part, "guest")),
                   max_ready_ms))
    else:
        probes = tuple((kind, part.url(path), _get(part.url(path), 10.0), limit)
                       for kind, path, limit in (("health", part.health, None), ("ready", part.ready, max_ready_ms))
                       if path)
    out = []
    name = part.name
    for kind, where, once, limit in probes:
        started = now_iso()
        t0 = time.perf_counter()
        p = retry(once, start_period_s)
        took = round(time.perf_counter() - t0, 3)
        status = Status.PASS if p.ok and (limit is None or p.latency_ms <= limit) else Status.FAIL
        goal = ("MCP handshake" if part.kind == "mcp" and kind == "ready" else "HTTP 200" if kind == "ready"
                or part.kind != "mcp" else "an HTTP answer") + (f" within {limit:g} ms" if limit else "")
        detail = f"{where}, {p.attempts} attempt(s)"
        if not p.ok:
            detail += f"; last answer: {p.status or 'no response'} {p.detail}"
        elif limit and p.latency_ms > limit:
            detail += "; answered, but slower than the target"
        out.append(CheckResult(f"health.{name}.{kind}", f"{name} {'liveness' if kind == 'health' else 'readiness'}",
                               Stage.HEALTH, status, target=goal, value=round(p.latency_ms, 1), unit="ms",
                               detail=detail, started_at=started, duration_s=took))
        if not p.ok and kind == "health":
            break  # not alive: readiness would only repeat the same failure
    return out


def check_target(target: Target, start_period_s: float = 60.0, max_ready_ms: float = 5000.0) -> list[CheckResult]:
    """Every part of the target, in role order."""
    results = []
    for part in target.parts():
        results.extend(check_part(target, part, start_period_s, max_ready_ms))
    return results


def check_service(settings: Settings, name: str, start_period_s: float = 60.0,
                  max_ready_ms: float = 5000.0) -> list[CheckResult]:
    """One service of our own suite (the same path: its part of the suite target)."""
    target = suite_target(settings, 3)
    return check_part(target, target.part(name), start_period_s, max_ready_ms)


def check_phase(settings: Settings, phase: int, start_period_s: float = 60.0,
                max_ready_ms: float = 5000.0) -> list[CheckResult]:
    return check_target(suite_target(settings, phase), start_period_s, max_ready_ms)

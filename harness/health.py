"""Health checks: liveness then readiness of every service of a phase, retried inside a start period.

Probes retry with exponential backoff until the start period ends (services that are still loading
models are not failures yet); each result carries the latency of the probe that decided it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from harness.httpclient import client
from harness.result import CheckResult, Stage, Status, now_iso
from suite import services
from suite.settings import Settings


@dataclass
class ProbeOutcome:
    ok: bool
    status: int | None
    latency_ms: float
    attempts: int
    detail: str


def probe_until(url: str, start_period_s: float, timeout_s: float = 10.0,
                first_delay_s: float = 0.25, max_delay_s: float = 4.0) -> ProbeOutcome:
    """GET ``url`` until it answers 200 or the start period is over (backoff between tries)."""
    deadline = time.monotonic() + start_period_s
    delay, attempts = first_delay_s, 0
    while True:
        attempts += 1
        t0 = time.perf_counter()
        try:
            r = client().get(url, timeout=timeout_s)
            latency = (time.perf_counter() - t0) * 1000
            if r.status_code == 200:
                return ProbeOutcome(True, 200, latency, attempts, r.text[:300])
            outcome = ProbeOutcome(False, r.status_code, latency, attempts, r.text[:300])
        except httpx.HTTPError as exc:
            latency = (time.perf_counter() - t0) * 1000
            outcome = ProbeOutcome(False, None, latency, attempts, f"{type(exc).__name__}: {exc}"[:300])
        if time.monotonic() + delay > deadline:
            return outcome
        time.sleep(delay)
        delay = min(delay * 2, max_delay_s)


def check_service(settings: Settings, name: str, start_period_s: float = 60.0,
                  max_ready_ms: float = 5000.0) -> list[CheckResult]:
    """Two results for one service: liveness (``/health``) and readiness (``/ready``, deep probe)."""
    spec = services.get(name)
    base = settings.url(name)
    out = []
    for kind, path, limit in (("health", spec.health_path, None), ("ready", spec.ready_path, max_ready_ms)):
        started = now_iso()
        t0 = time.perf_counter()
        p = probe_until(base + path, start_period_s)
        took = round(time.perf_counter() - t0, 3)
        status = Status.PASS if p.ok and (limit is None or p.latency_ms <= limit) else Status.FAIL
        target = "HTTP 200" + (f" within {limit:g} ms" if limit else "")
        detail = f"{base}{path}, {p.attempts} attempt(s)"
        if not p.ok:
            detail += f"; last answer: {p.status or 'no response'} {p.detail}"
        elif limit and p.latency_ms > limit:
            detail += "; answered, but slower than the target"
        out.append(CheckResult(f"health.{name}.{kind}", f"{name} {'liveness' if kind == 'health' else 'readiness'}",
                               Stage.HEALTH, status, target=target, value=round(p.latency_ms, 1), unit="ms",
                               detail=detail, started_at=started, duration_s=took))
        if not p.ok and kind == "health":
            break  # not alive: readiness would only repeat the same failure
    return out


def check_phase(settings: Settings, phase: int, start_period_s: float = 60.0,
                max_ready_ms: float = 5000.0) -> list[CheckResult]:
    results = []
    for spec in services.for_phase(phase):
        results.extend(check_service(settings, spec.name, start_period_s, max_ready_ms))
    return results

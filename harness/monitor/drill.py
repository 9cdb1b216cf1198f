"""The alert drill: stop a service, watch ServiceDown fire in Prometheus, reach Alertmanager and be
delivered to its webhook; start the service again and watch the resolution travel the same path.

Stopping and starting go through the ``suite`` CLI (``suite down NAME`` / ``suite up --phase N``) by
default; tests hand in their own. The service is started again whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from harness import stack as suite_stack
from harness.monitor import api
from harness.monitor.prometheus import MonitorStack
from harness.result import CheckResult, Stage, Status, now_iso
from suite import services
from suite.settings import Settings

STAGE = Stage.MONITORING
ALERT = "ServiceDown"
Echo = Callable[[str], None]


def cli_stop(service: str, settings: Settings) -> Callable[[], object]:
    return lambda: suite_stack.down([service], settings)


def cli_start(phase: int, settings: Settings) -> Callable[[], tuple[bool, str]]:
    """``suite up --phase N`` starts what is missing and returns once it is ready: (ok, output tail)."""
    def start() -> tuple[bool, str]:
        outcome = suite_stack.up(phase, settings)
        return outcome.exit_code == 0, "\n".join(outcome.lines[-12:])
    return start


def skipped(service: str, reason: str, target: str = "the alert drill runs") -> list[CheckResult]:
    """The drill's line as ``skip``, with why."""
    return [CheckResult.skipped("monitor.alert.fires", f"{ALERT} fires for a stopped {service}", STAGE,
                                target=target, measured="not run", detail=reason)]


def alert_drill(stack: MonitorStack, service: str, phase: int, timeout_s: float = 60.0, echo: Echo | None = None,
                stop: Callable[[], object] | None = None,
                start: Callable[[], tuple[bool, str]] | None = None) -> list[CheckResult]:
    """Two results: the alert fires (Prometheus → Alertmanager → webhook) and it resolves."""
    services.get(service)  # an unknown name is an error, not a drill that proves nothing
    if service not in stack.services:
        return skipped(service, f"{service} is not among the running services: {', '.join(stack.services)}",
                       target="the drilled service is running")
    say = echo or (lambda _m: None)
    stop = stop or cli_stop(service, stack.settings)
    start = start or cli_start(phase, stack.settings)
    if stack.sink is None:
        raise RuntimeError("the monitoring stack is not started")
    path = _AlertPath(stack, service)
    timing = (f"`for:` {stack.for_override or 'as shipped'}, scrape/evaluation every "
              f"{stack.timing.scrape_interval}; the shipped rule waits 1m")
    fires, restarted = _fire(path, stop, start, timeout_s, timing, say)
    return [fires, _resolve(path, restarted, timeout_s, timing)]


class _AlertPath:
    """Where the drilled service's ServiceDown alert shows: Prometheus, Alertmanager, the webhook sink."""

    def __init__(self, stack: MonitorStack, service: str) -> None:
        self.stack, self.service, self.sink = stack, service, stack.sink
        self.labels = {"alertname": ALERT, "service": service}

    def _matches(self, alert: dict) -> bool:
        return all(alert["labels"].get(k) == v for k, v in self.labels.items())

    def firing(self) -> list[dict]:
        return [a for a in api.alerts(self.stack.prometheus) if self._matches(a) and a["state"] == "firing"]

    def in_alertmanager(self) -> list[dict]:
        return [a for a in api.am_alerts(self.stack.alertmanager)
                if self._matches(a) and a["status"]["state"] == "active"]

    def delivered(self, state: str, since: float) -> bool:
        return self.sink.received(ALERT, state, since, service=self.service)


@dataclass
class _Restart:
    """The drilled service's stop time and how starting it again went."""

    t_stop: float
    ok: bool
    output: str
    took_s: float


def _fire(path: _AlertPath, stop: Callable[[], object], start: Callable[[], tuple[bool, str]], timeout_s: float,
          timing: str, say: Echo) -> tuple[CheckResult, _Restart]:
    """Stop the service, wait for the alert along the path, start the service again whatever happened."""
    service = path.service
    fire_started, t_stop = now_iso(), time.time()
    say(f"stopping {service}")
    stop()
    try:
        fired, t_fire = api.wait_for(path.firing, timeout_s)
        held, t_am = api.wait_for(path.in_alertmanager, max(1.0, timeout_s - t_fire))
        delivered, t_hook = api.wait_for(lambda: path.delivered("firing", t_stop), max(1.0, timeout_s - t_fire - t_am))
    finally:
        say(f"starting {service} again")
        t_restart = time.time()
        up_ok, up_out = start()
        restarted = _Restart(t_stop, up_ok, up_out, time.time() - t_restart)
    ok = bool(fired and held and delivered)
    return CheckResult(
        "monitor.alert.fires", f"{ALERT} fires for a stopped {service} and reaches Alertmanager", STAGE,
        Status.PASS if ok else Status.FAIL, target=f"firing, in Alertmanager, delivered within {timeout_s:g}s",
        measured=(f"firing after {t_fire:.1f}s, in Alertmanager +{t_am:.1f}s, delivered +{t_hook:.1f}s" if ok
                  else f"firing: {bool(fired)}, in Alertmanager: {bool(held)}, delivered: {bool(delivered)}"),
        detail=timing, started_at=fire_started, duration_s=round(t_restart - t_stop, 2)), restarted


def _resolve(path: _AlertPath, restarted: _Restart, timeout_s: float, timing: str) -> CheckResult:
    """With the service back: the alert leaves Prometheus and its resolution reaches the webhook."""
    resolve_started, t_up = now_iso(), time.time()
    gone, t_gone = api.wait_for(lambda: not path.firing(), timeout_s)
    resolved, t_res = api.wait_for(lambda: path.delivered("resolved", restarted.t_stop), max(1.0, timeout_s - t_gone))
    ok = restarted.ok and bool(gone) and bool(resolved)
    return CheckResult(
        "monitor.alert.resolves", f"Starting {path.service} again resolves {ALERT}", STAGE,
        Status.PASS if ok else Status.FAIL, target=f"resolved and delivered within {timeout_s:g}s",
        measured=(f"restarted in {restarted.took_s:.1f}s; inactive +{t_gone:.1f}s, resolution delivered "
                  f"+{t_res:.1f}s" if ok else
                  f"restarted: {restarted.ok}, inactive: {bool(gone)}, resolution delivered: {bool(resolved)}"),
        detail=timing if restarted.ok else restarted.output, started_at=resolve_started,
        duration_s=round(time.time() - t_up, 2))

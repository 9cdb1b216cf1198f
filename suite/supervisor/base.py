"""The backend contract: ``up``, ``down``, ``status``, ``log_path`` returning ``ServiceState``."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import httpx

from suite import services
from suite.services import ServiceSpec
from suite.settings import Settings

Progress = Callable[[str], None]


class SupervisorError(RuntimeError):
    """Root of the supervisor's errors; the CLI prints the message and exits non-zero."""


class PortInUse(SupervisorError):
    def __init__(self, service: str, port: int, holder: str) -> None:
        super().__init__(f"port {port} for {service} is already in use by {holder}; "
                         f"stop it, or shift all ports with SUITE_PORT_OFFSET")
        self.service, self.port, self.holder = service, port, holder


class ServiceFailed(SupervisorError):
    def __init__(self, service: str, reason: str, log_tail: str = "") -> None:
        msg = f"{service} did not become ready: {reason}"
        if log_tail:
            msg += "\n--- last lines of its log ---\n" + log_tail
        super().__init__(msg)
        self.service, self.reason, self.log_tail = service, reason, log_tail


@dataclass
class ServiceState:
    """One service as a backend sees it. ``state`` is the supervisor's word for it (running, starting,
    backoff, exited, fatal, stopped; ``not started`` when the supervisor never ran it); ``configured``
    marks the services of the phase that was brought up, which ``suite status`` lists even when they
    are down."""

    name: str
    phase: int
    url: str
    pid: int | None = None
    running: bool = False
    healthy: bool = False
    ready: bool = False
    detail: str = ""
    state: str = "not started"
    configured: bool = False
    restarts: int = 0
    last_exit: str = ""  # "exit status 1" / "signal 9 (SIGKILL)" and why, if known
    last_exit_at: str = ""  # ISO time of that exit

    def to_dict(self) -> dict:
        return asdict(self)


class Backend(Protocol):
    def up(self, phase: int, progress: Progress | None = None, only: list[str] | None = None) -> list[str]:
        """Start every service of phases 1..phase (``only``: of those, the named ones) not already
        running, and wait for those that run on other hosts (``Settings.urls``); return the names
        started."""

    def down(self, names: list[str] | None = None) -> list[str]:
        """Stop the named services (all when None); return the names stopped."""

    def status(self) -> list[ServiceState]: ...

    def log_path(self, name: str) -> Path: ...


def selected(settings: Settings, phase: int, only: list[str] | None) -> tuple[list[ServiceSpec], list[ServiceSpec]]:
    """(services to run here, services on other hosts to wait for) of ``suite up --phase N [--only ...]``,
    each in dependency order."""
    specs = [s for s in services.for_phase(phase) if not only or s.name in only]
    if only:
        unknown = [n for n in only if n not in {s.name for s in services.for_phase(phase)}]
        if unknown:
            raise SupervisorError(f"--only {', '.join(unknown)}: not a service of phase {phase}")
    return [s for s in specs if s.name not in settings.urls], [s for s in specs if s.name in settings.urls]


def probe(url: str, timeout: float = 2.0, client: httpx.Client | None = None,
          verify: ssl.SSLContext | bool = True) -> tuple[bool, str]:
    """GET a probe URL: (ok, short detail). A caller probing in a loop passes its own ``client``
    (a new one per call builds a TLS context each time, which costs more CPU than the probe);
    ``verify`` is the stack's client context (``suite.tls.client_context``) for an https URL."""
    try:
        r = client.get(url, timeout=timeout) if client is not None else httpx.get(url, timeout=timeout, verify=verify)
    except httpx.TimeoutException:
        return False, "timeout"
    except httpx.TransportError as exc:
        return False, type(exc).__name__
    if r.status_code == 200:
        return True, "ok"
    try:
        reason = r.json().get("reason") or r.json().get("error", {}).get("message", "")
    except ValueError:
        reason = r.text[:200]
    return False, f"HTTP {r.status_code} {reason}".strip()


def wait_ready(spec: ServiceSpec, base_url: str, deadline: float, exited: Callable[[], str | None],
               progress: Progress | None, log_tail: Callable[[], str], every_s: float = 5.0,
               verify: ssl.SSLContext | bool = True) -> float:
    """Poll the readiness probe until it passes, the process exits (``exited`` returns how), or the
    deadline passes."""
    t0 = time.monotonic()
    last_note = t0
    delay = 0.2
    detail = "starting"
    while True:
        how = exited()
        if how is not None:
            raise ServiceFailed(spec.name, f"process exited ({how})" if how else "process exited", log_tail())
        ok, detail = probe(base_url + spec.ready_path, timeout=10.0, verify=verify)
        if ok:
            return time.monotonic() - t0
        now = time.monotonic()
        if now > deadline:
            raise ServiceFailed(spec.name, f"not ready before the deadline ({detail})", log_tail())
        if progress and now - last_note >= every_s:
            progress(f"  … {spec.name}: waiting {now - t0:.0f}s ({detail})")
            last_note = now
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)

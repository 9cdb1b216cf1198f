"""Prometheus and Alertmanager started for real against the running suite, on loopback.

Configuration comes from ``harness.monitor.config`` (written to ``<work_dir>``, kept as evidence);
their data goes to a scratch directory removed on stop; no systemd: two child processes in their
own sessions, on the settings' ``prometheus`` / ``alertmanager`` ports (``--cluster.listen-address=``
keeps Alertmanager's gossip port closed). A webhook receiver in this process records what
Alertmanager delivers, so the alert path is proven to the last hop. The processes are stopped by
``stop()`` / the ``with`` block, at interpreter exit, and (Linux) when the starting thread dies.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from harness.errors import RunbookError
from harness.monitor import api, promtool
from harness.monitor.config import Timing, qdrant_address, write_configs
from suite.net import port_free, port_holder
from suite.settings import Settings

log = logging.getLogger(__name__)


class MonitorStackError(RunbookError):
    """Prometheus or Alertmanager could not be started (port taken, binary missing, not ready)."""


class AlertSink:
    """A loopback webhook receiver for Alertmanager: keeps every notification it is sent."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.notifications: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 1_000_000)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {"invalid": True}
                with sink._lock:
                    sink.notifications.append({"received": time.time(), **body})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:  # stay quiet
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/alerts"

    def received(self, alertname: str, status: str, since: float = 0.0, **labels: str) -> list[dict]:
        """Alerts named ``alertname`` with ``status`` (firing/resolved) delivered after ``since``."""
        with self._lock:
            batches = [n for n in self.notifications if n["received"] >= since]
        return [a for n in batches for a in n.get("alerts", [])
                if a.get("status") == status and a.get("labels", {}).get("alertname") == alertname
                and all(a.get("labels", {}).get(k) == v for k, v in labels.items())]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the thread that started us dies (Linux), so a killed kernel
    leaves no Prometheus behind."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class MonitorStack:
    settings: Settings
    services: list[str]
    work_dir: Path
    timing: Timing = field(default_factory=lambda: Timing.drill(2))
    for_override: str | None = "4s"
    ready_deadline_s: float = 30.0
    sink: AlertSink | None = None
    files: dict[str, Path] = field(default_factory=dict)
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _scratch: Path | None = None

    @property
    def prometheus(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port('prometheus')}"

    @property
    def alertmanager(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port('alertmanager')}"

    @property
    def in_containers(self) -> bool:
        """On the docker backend both run from their images (Debian's packages, `suite image build`)."""
        return self.settings.backend == "docker"

    def start(self) -> MonitorStack:
        absent = self._missing()
        if absent:
            raise MonitorStackError(f"not available: {', '.join(absent)} ({self._hint()})")
        host = self.settings.host
        for name in ("prometheus", "alertmanager"):
            port = self.settings.port(name)
            if not port_free(host, port):
                raise MonitorStackError(f"port {port} for {name} is held by {port_holder(port) or 'another process'}"
                                        "; stop it or shift the ports with SUITE_PORT_OFFSET")
        self.sink = self.sink or AlertSink(host)
        qdrant = qdrant_address(self.settings)
        key_file = None
        self._scratch = Path(tempfile.mkdtemp(prefix="suite-monitor-"))
        if qdrant and self.settings.rag.qdrant_api_key_file:
            key_file = self.settings.rag.qdrant_api_key_file.expanduser()
        self.files = write_configs(
            self.settings, self.work_dir, self.services, timing=self.timing,
            alertmanager=f"{host}:{self.settings.port('alertmanager')}", webhook_url=self.sink.url,
            qdrant=qdrant, qdrant_key_file=str(key_file) if key_file else None, for_override=self.for_override)
        atexit.register(self.stop)
        self._spawn("alertmanager", [
            promtool.binary("alertmanager"), f"--config.file={self.files['alertmanager']}",
            f"--storage.path={self._scratch / 'alertmanager'}",
            f"--web.listen-address={host}:{self.settings.port('alertmanager')}",
            "--cluster.listen-address=", "--log.level=info"])
        self._spawn("prometheus", [
            promtool.binary("prometheus"), f"--config.file={self.files['prometheus']}",
            f"--storage.tsdb.path={self._scratch / 'prometheus'}",
            f"--web.listen-address={host}:{self.settings.port('prometheus')}",
            "--storage.tsdb.retention.time=1d", "--log.level=info"])
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _missing(self) -> list[str]:
        if not self.in_containers:
            return promtool.missing("prometheus", "alertmanager")
        from suite.containers import images
        from suite.containers.engine import client

        c = client(timeout=20)
        if c is None:
            return ["a Docker engine"]
        return [img for img in (images.PROMETHEUS, images.ALERTMANAGER) if not images.present(c, img)]

    def _hint(self) -> str:
        return "`suite image build` makes the images from Debian's packages" if self.in_containers \
            else promtool.INSTALL_HINT

    def _spawn(self, name: str, cmd: list[str]) -> None:
        if self.in_containers:
            self._spawn_container(name, cmd)
            return
        out = open(self.work_dir / f"{name}.log", "w")
        try:
            self._procs[name] = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(self.work_dir),
                start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        finally:
            out.close()

    def _spawn_container(self, name: str, cmd: list[str]) -> None:
        """``cmd`` (binary and flags) as a container of the image; config and scratch dirs mounted at their
        own paths and handed to the containers' user."""
        from suite.containers import images
        from suite.containers.procs import ContainerProcess
        from suite.supervisor.docker import container_user, hand_over

        uid, gid = container_user(self.settings)
        if self._scratch is not None:
            (self._scratch / name).mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.work_dir, self._scratch):
                hand_over(path, uid, gid)
        image = images.PROMETHEUS if name == "prometheus" else images.ALERTMANAGER
        self._procs[name] = ContainerProcess(  # type: ignore[assignment]
            image, cmd[1:], name=f"suite-monitor-{name}-{self.settings.port(name)}", user=f"{uid}:{gid}",
            log=self.work_dir / f"{name}.log", ro=[self.work_dir], rw=[self._scratch])

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_deadline_s
        pending = {"prometheus": self.prometheus, "alertmanager": self.alertmanager}
        while pending:
            for name, base in list(pending.items()):
                proc = self._procs[name]
                if proc.poll() is not None:
                    raise MonitorStackError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
                if api.ready(base):
                    del pending[name]
            if pending and time.monotonic() > deadline:
                raise MonitorStackError(f"{', '.join(pending)} not ready within {self.ready_deadline_s:g}s: "
                                        + " | ".join(self.log_tail(n) for n in pending))
            if pending:
                time.sleep(0.2)

    def log_tail(self, name: str, lines: int = 8) -> str:
        proc = self._procs.get(name)
        if hasattr(proc, "logs_now"):
            return "\n".join(proc.logs_now().splitlines()[-lines:])
        path = self.work_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    def stop(self) -> None:
        """Stop both processes (SIGTERM, then SIGKILL after 10 s) and remove the scratch data."""
        for name, proc in list(self._procs.items()):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=10)  # at once for one that exited (a container is removed then)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            del self._procs[name]
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        atexit.unregister(self.stop)

    def __enter__(self) -> MonitorStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

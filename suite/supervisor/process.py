"""Process backend: each service a child process (own session), pid and log files in the data dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from suite import services
from suite.net import port_free, port_holder
from suite.services import ServiceSpec
from suite.settings import Settings
from suite.supervisor.base import (
    PortInUse,
    Progress,
    ServiceState,
    SupervisorError,
    probe,
    wait_ready,
)


def _wait_gone(pid: int, timeout: float) -> bool:
    """Wait until a process has exited. A zombie counts as gone: when another process started the
    service (a notebook kernel stopping a stack the test fixture started), only that parent can reap it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                try:
                    os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
                except ChildProcessError:
                    pass
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


class ProcessBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid_dir = settings.pid_dir
        self.log_dir = settings.log_dir

    # -- files ----------------------------------------------------------------------------------
    def pid_file(self, name: str) -> Path:
        return self.pid_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        services.get(name)
        return self.log_dir / f"{name}.log"

    def _record(self, name: str) -> dict | None:
        try:
            return json.loads(self.pid_file(name).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def pid_of(self, name: str) -> int | None:
        """The pid of our running service, or None (stale pid files are removed)."""
        rec = self._record(name)
        if not rec:
            return None
        try:
            proc = psutil.Process(rec["pid"])
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE \
                    and "suite.serve" in proc.cmdline() and name in proc.cmdline():
                return rec["pid"]
        except psutil.Error:
            pass
        self.pid_file(name).unlink(missing_ok=True)
        return None

    def _tail(self, name: str, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # -- contract -------------------------------------------------------------------------------
    def up(self, phase: int, progress: Progress | None = None) -> list[str]:
        say = progress or (lambda _m: None)
        specs = services.for_phase(phase)
        running = {s.name for s in specs if self.pid_of(s.name)}
        todo = [s for s in specs if s.name not in running]
        for spec in todo:  # refuse before starting anything
            port = self.settings.port(spec.name)
            if not port_free(self.settings.host, port):
                raise PortInUse(spec.name, port, port_holder(port) or "another process")
        for name in running:
            say(f"  = {name} already running (pid {self.pid_of(name)})")
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        settings_file = self.settings.dump_file(self.pid_dir / "settings.json")
        deadline = time.monotonic() + self.settings.ready_deadline_s
        started: list[str] = []
        try:
            ready = set(running)
            while todo:
                wave = [s for s in todo if all(d in ready or d not in {x.name for x in specs}
                                               for d in s.depends_on)]
                if not wave:
                    raise SupervisorError("dependency cycle among: " + ", ".join(s.name for s in todo))
                procs = {}
                for spec in wave:
                    procs[spec.name] = self._spawn(spec, settings_file)
                    started.append(spec.name)
                    say(f"  + {spec.name} started (pid {procs[spec.name].pid}, port "
                        f"{self.settings.port(spec.name)}, log {self.log_path(spec.name)})")
                for spec in wave:
                    proc = procs[spec.name]
                    took = wait_ready(spec, self.settings.url(spec.name), deadline,
                                      alive=lambda p=proc: p.poll() is None, progress=say,
                                      log_tail=lambda n=spec.name: self._tail(n))
                    say(f"  ✓ {spec.name} ready in {took:.1f}s")
                    ready.add(spec.name)
                todo = [s for s in todo if s.name not in ready]
        except BaseException:
            if started:
                say("  ! start failed; stopping what this call started: " + ", ".join(started))
                self.down(started)
            raise
        return started

    def _spawn(self, spec: ServiceSpec, settings_file: Path) -> subprocess.Popen:
        log = open(self.log_path(spec.name), "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        cmd = [sys.executable, "-m", "suite.serve", spec.name, "--settings-file", str(settings_file)]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True, close_fds=True)
        log.close()
        record = {"pid": proc.pid, "port": self.settings.port(spec.name), "started_at": time.time(),
                  "cmd": cmd, "log": str(self.log_path(spec.name))}
        tmp = self.pid_file(spec.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.pid_file(spec.name))
        return proc

    def down(self, names: list[str] | None = None) -> list[str]:
        order = [s.name for s in reversed(services.SERVICES) if names is None or s.name in names]
        stopped = []
        for name in order:
            pid = self.pid_of(name)
            if pid is None:
                continue
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not _wait_gone(pid, 10):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _wait_gone(pid, 5)
            self.pid_file(name).unlink(missing_ok=True)
            stopped.append(name)
        return stopped

    def status(self) -> list[ServiceState]:
        states = []
        for spec in services.SERVICES:
            url = self.settings.url(spec.name)
            st = ServiceState(spec.name, spec.phase, url, pid=self.pid_of(spec.name))
            st.running = st.pid is not None
            if st.running:
                st.healthy, health = probe(url + spec.health_path)
                st.ready, st.detail = probe(url + spec.ready_path, timeout=15.0)
                if not st.healthy:
                    st.detail = f"health: {health}"
            else:
                st.detail = "not running"
            states.append(st)
        return states

"""Docker backend: the same contract over ``docker compose`` (GPU boxes).

``deploy/compose.yaml`` runs each service from one image as ``python -m suite.serve NAME`` with the
host network (services still bind 127.0.0.1) and the settings file mounted, so a containerised stack
behaves like the process backend's. Readiness is polled over HTTP exactly as for processes.

``up`` passes the phase's compose profile (and ``gpu`` plus ``compose.gpu.yaml`` on the gpu profile),
the settings' ports and the host user as compose variables, and makes the Qdrant API key and the
Grafana password (``ensure_secrets``) before the containers start.

Restarts come from compose's ``restart: on-failure:N`` (the Docker engine restarts a container that
exits non-zero, with its own growing delay, at most N times); ``status`` reads the state, the last
exit code and the restart count the engine keeps (``docker inspect``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from suite import services, tls
from suite.settings import Settings, project_root
from suite.supervisor.base import (
    Progress,
    ServiceFailed,
    ServiceState,
    SupervisorError,
    probe,
    selected,
    wait_ready,
)

PROJECT = "suite"


class DockerBackend:
    def __init__(self, settings: Settings, compose_file: Path | None = None) -> None:
        self.settings = settings
        self.compose_file = compose_file or project_root() / "deploy" / "compose.yaml"

    def compose_files(self) -> list[Path]:
        """compose.yaml, plus compose.gpu.yaml (GPU reservations, CUDA image) on the gpu profile."""
        files = [self.compose_file]
        gpu = self.compose_file.with_name("compose.gpu.yaml")
        if self.settings.profile == "gpu" and gpu.is_file():
            files.append(gpu)
        return files

    def _compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        docker = shutil.which("docker")
        if docker is None:
            raise SupervisorError("the docker backend needs the `docker` client (with Compose v2) on PATH")
        files = [a for f in self.compose_files() for a in ("-f", str(f))]
        cmd = [docker, "compose", *files, "-p", PROJECT, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **compose_env(self.settings)})
        if check and proc.returncode != 0:
            raise SupervisorError(f"`docker compose {' '.join(args)}` failed ({proc.returncode}): "
                                  f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def containers(self) -> dict[str, dict]:
        """``docker compose ps --all`` by service: running, restarting and exited containers."""
        proc = self._compose("ps", "--all", "--format", "json", check=False)
        found: dict[str, dict] = {}
        for line in proc.stdout.splitlines():  # compose prints one JSON object per line
            line = line.strip()
            if not line:
                continue
            try:
                items = json.loads(line)
            except ValueError:
                continue
            for item in items if isinstance(items, list) else [items]:
                if item.get("Service"):
                    found[item["Service"]] = item
        return found

    def running(self) -> set[str]:
        return {name for name, c in self.containers().items() if c.get("State") == "running"}

    def _inspect(self, containers: list[str]) -> dict[str, dict]:
        """``docker inspect`` by container name: restart count and the last exit."""
        docker = shutil.which("docker")
        if not containers or docker is None:
            return {}
        proc = subprocess.run([docker, "inspect", *containers], capture_output=True, text=True, timeout=60)
        try:
            return {c.get("Name", "").lstrip("/"): c for c in json.loads(proc.stdout or "[]")}
        except ValueError:
            return {}

    def up(self, phase: int, progress: Progress | None = None, only: list[str] | None = None) -> list[str]:
        say = progress or (lambda _m: None)
        local, remote = selected(self.settings, phase, only)
        specs = [s for s in services.for_phase(phase) if s in local or s in remote]
        before = self.running()
        ensure_secrets(self.settings)
        self.settings.dump_file(self.settings.pid_dir / "settings.json")
        todo = [s.name for s in local if s.name not in before]
        if todo:
            profiles = ["--profile", f"phase{phase}"] + (["--profile", "gpu"] if self.settings.profile == "gpu" else [])
            say(f"  docker compose {' '.join(profiles)} up -d {' '.join(todo)}")
            self._compose(*profiles, "up", "-d", *todo)
        deadline = time.monotonic() + self.settings.ready_deadline_s
        try:
            for spec in specs:
                here = spec in local
                took = wait_ready(spec, self.settings.url(spec.name), deadline,
                                  exited=lambda n=spec.name, h=here: None if not h or n in self.running()
                                  else "container not running",
                                  progress=say, log_tail=lambda n=spec.name, h=here: self._logs(n, 25) if h else "",
                                  verify=tls.client_context(self.settings))
                say(f"  ✓ {spec.name} ready in {took:.1f}s")
        except (ServiceFailed, KeyboardInterrupt):
            if todo:
                self.down(todo)
            raise
        return todo

    def down(self, names: list[str] | None = None) -> list[str]:
        up = self.running()
        targets = [s.name for s in reversed(services.SERVICES) if s.name in up and (names is None or s.name in names)]
        if targets:
            self._compose("stop", *targets)
            self._compose("rm", "-f", *targets)
        return targets

    def status(self) -> list[ServiceState]:
        found = self.containers()
        details = self._inspect([c["Name"] for c in found.values() if c.get("Name")])
        states = []
        for spec in services.SERVICES:
            st = ServiceState(spec.name, spec.phase, self.settings.url(spec.name))
            item = found.get(spec.name)
            if item is not None:
                info = details.get(item.get("Name", ""), {})
                st.configured, st.state = True, item.get("State", "unknown")
                st.running = st.state == "running"
                st.pid = int(info.get("State", {}).get("Pid") or 0) or None  # the container's init, host pid space
                st.restarts = int(info.get("RestartCount", 0))
                code = info.get("State", {}).get("ExitCode", item.get("ExitCode"))
                if (code and st.state != "running") or st.restarts:
                    st.last_exit = _describe_exit(int(code or 0))
                    st.last_exit_at = info.get("State", {}).get("FinishedAt", "")
            if st.running:
                st.healthy, _ = probe(st.url + spec.health_path, verify=tls.client_context(self.settings))
                st.ready, st.detail = probe(st.url + spec.ready_path, timeout=15.0,
                                           verify=tls.client_context(self.settings))
            else:
                st.detail = item.get("Status", st.state) if item else "not running"
            states.append(st)
        return states

    def _logs(self, name: str, lines: int = 200) -> str:
        return self._compose("logs", "--no-color", "--tail", str(lines), name, check=False).stdout

    def log_path(self, name: str) -> Path:
        """Compose keeps the logs; this writes the latest ones to the usual file and returns it."""
        services.get(name)
        path = self.settings.log_dir / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._logs(name, 2000))
        return path


def ensure_secrets(settings: Settings) -> None:
    """The Qdrant API key and Grafana's admin password as 0600 files in ``<data_dir>/secrets`` (compose
    mounts them as secrets). The key is the file ``rag.qdrant_api_key_file`` names; with none set, a
    random key is made once in ``<data_dir>/secrets/qdrant_api_key`` and that file goes into the
    settings the containers read (the key itself never sits in a settings dump)."""
    if settings.rag.qdrant_api_key_file is None:
        _secret(settings, "qdrant_api_key")
        settings.rag.qdrant_api_key_file = settings.data_dir / "secrets" / "qdrant_api_key"
    _secret(settings, "grafana_admin_password")


def _secret(settings: Settings, name: str, value: str | None = None) -> str:
    """The secret ``name`` (made once when absent); written as ``value`` when one is given."""
    path = settings.data_dir / "secrets" / name
    if value is None and path.is_file():
        return path.read_text().strip()
    value = value or secrets.token_urlsafe(32)
    if path.is_file() and path.read_text().strip() == value:
        return value
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(value)
    os.replace(tmp, path)
    return value


def compose_env(settings: Settings) -> dict[str, str]:
    """What compose.yaml interpolates, from the settings: data dir, the host user, ports, the key."""
    env = {"SUITE_DATA_DIR": str(settings.data_dir), "SUITE_PROFILE": settings.profile,
           "SUITE_UID": str(os.getuid()), "SUITE_GID": str(os.getgid()),
           "SUITE_QDRANT_GRPC_PORT": str(settings.port("qdrant") + 1)}
    for name in ("qdrant", "prometheus", "alertmanager", "loki", "grafana", "gpu_exporter"):
        env[f"SUITE_{name.upper()}_PORT"] = str(settings.port(name))
    key = settings.qdrant_api_key() if settings.rag.qdrant_api_key_file else None
    if key:
        env["SUITE_QDRANT_API_KEY"] = key
    return env


def _describe_exit(code: int) -> str:
    """Docker reports a signal death as 128 + the signal number."""
    if code > 128:
        try:
            return f"exit status {code} (signal {code - 128}, {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit status {code}"

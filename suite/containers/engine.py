"""The Docker engine: reuse a running one, or install and start ``dockerd``; stop only what we started.

``start`` pings the engine the ``docker`` SDK finds (``DOCKER_HOST`` or ``/var/run/docker.sock``); when
none answers it installs Debian's ``docker.io`` if ``dockerd`` is missing and we are root with apt,
starts ``dockerd`` with its pid file in ``<data_dir>/docker/dockerd.pid`` and its log in
``<data_dir>/logs/dockerd.log``, and waits for the API. ``stop`` stops that ``dockerd`` only — an engine
someone else started is never touched. ``versions`` reads the engine's version from the API and the
Compose plugin's from ``docker compose version`` (Compose is a CLI plugin: no API reports it).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENGINE_MIN = (20, 10)  # seed 001's checklist: Docker >= 20.10, Compose >= 2.0
COMPOSE_MIN = (2, 0)
START_TIMEOUT_S = 60.0

Progress = Callable[[str], None]


class EngineError(RuntimeError):
    """The engine cannot be had here; the message says what to do."""


def _quiet(_message: str) -> None:
    pass


def version_tuple(text: str) -> tuple[int, int]:
    m = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def client(timeout: float = 60.0):
    """A ``docker.DockerClient`` for the engine of this environment, or None when none answers."""
    import docker  # imported here: the process backend never needs it
    from docker.errors import DockerException

    try:
        c = docker.from_env(timeout=int(timeout))
        c.ping()
        return c
    except (DockerException, OSError):
        return None


def require_client(timeout: float = 60.0):
    c = client(timeout)
    if c is None:
        raise EngineError("no Docker engine answers (start one with `suite engine start`, or set DOCKER_HOST)")
    return c


def docker_cli() -> str | None:
    """The ``docker`` client that has the Compose v2 plugin (Compose is driven through the CLI only)."""
    return shutil.which("docker")


def compose_version() -> str | None:
    """``docker compose version --short`` (e.g. ``2.26.1``), or None without the plugin."""
    cli = docker_cli()
    if cli is None:
        return None
    try:
        proc = subprocess.run([cli, "compose", "version", "--short"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = proc.stdout.strip().lstrip("v")
    return out if proc.returncode == 0 and out else None


@dataclass
class Versions:
    engine: str | None  # the server's version, None when no engine answers
    api: str | None
    compose: str | None
    os: str = ""

    @property
    def ok(self) -> bool:
        return (self.engine is not None and version_tuple(self.engine) >= ENGINE_MIN
                and self.compose is not None and version_tuple(self.compose) >= COMPOSE_MIN)

    def describe(self) -> str:
        return f"engine {self.engine or 'absent'}, compose {self.compose or 'absent'}"


def versions(c=None) -> Versions:
    c = c or client(timeout=20)
    if c is None:
        return Versions(None, None, compose_version())
    info = c.version()
    return Versions(info.get("Version"), info.get("ApiVersion"), compose_version(), info.get("Os", ""))


# -- starting and stopping dockerd --------------------------------------------------------------------
def paths(data_dir: Path) -> tuple[Path, Path]:
    """(pid file, log file) of the ``dockerd`` we start for this data dir."""
    return Path(data_dir) / "docker" / "dockerd.pid", Path(data_dir) / "logs" / "dockerd.log"


def _root_with_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def apt_install(packages: list[str], progress: Progress = _quiet, log: Path | None = None) -> None:
    """``apt-get install --no-install-recommends`` as root (``apt-get update`` first); output to ``log``."""
    if not _root_with_apt():
        raise EngineError(f"{' '.join(packages)} missing, and only root with apt-get installs it here: "
                          f"sudo apt-get install --no-install-recommends {' '.join(packages)}")
    progress(f"  apt-get install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if log:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "a") if log else subprocess.DEVNULL
    try:
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]):
            if subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=900).returncode != 0:
                raise EngineError(f"`{' '.join(cmd)}` failed" + (f"; see {log}" if log else ""))
    finally:
        if log:
            out.close()


def ensure_dockerd(progress: Progress = _quiet, log: Path | None = None) -> str:
    """The path of ``dockerd``, installing Debian's ``docker.io`` when it is missing and we may."""
    found = shutil.which("dockerd")
    if found:
        return found
    apt_install(["docker.io"], progress, log)
    found = shutil.which("dockerd")
    if not found:
        raise EngineError("docker.io installed but no dockerd on PATH")
    return found


def _pid_alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"dockerd" in cmdline else None  # a reused pid is not our engine


def start(data_dir: Path, progress: Progress = _quiet) -> bool:
    """Make sure an engine answers; True when this call started ``dockerd`` (so the caller stops it)."""
    if client(timeout=10) is not None:
        progress("  docker engine already running: reused")
        return False
    pid_file, log = paths(data_dir)
    dockerd = ensure_dockerd(progress, log)
    if os.geteuid() != 0:
        raise EngineError("no Docker engine answers and dockerd needs root: start it (`sudo systemctl start "
                          "docker`) or run this as root")
    pid_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log.parent.mkdir(parents=True, exist_ok=True)
    stale = _pid_alive(pid_file)
    if stale:  # ours, but not answering yet (or hung): give it the same wait below
        progress(f"  dockerd (pid {stale}) from {pid_file} is starting")
    else:
        pid_file.unlink(missing_ok=True)
        with open(log, "ab") as out:
            # its own session: a Ctrl-C of the caller does not reach the engine mid-way
            subprocess.Popen([dockerd, "--pidfile", str(pid_file)], stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        progress(f"  dockerd started (pid file {pid_file}, log {log})")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if client(timeout=5) is not None:
            return not stale
        time.sleep(0.5)
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.is_file() else []
    raise EngineError(f"dockerd did not answer within {START_TIMEOUT_S:.0f}s; last lines of {log}:\n"
                      + "\n".join(tail))


def ours(data_dir: Path) -> int | None:
    """The pid of the ``dockerd`` this data dir's pid file names, when it still runs."""
    return _pid_alive(paths(data_dir)[0])


def stop(data_dir: Path, progress: Progress = _quiet, timeout_s: float = 30.0) -> bool:
    """Stop the ``dockerd`` we started for this data dir (SIGTERM, SIGKILL after ``timeout_s``);
    False when there is none (an engine someone else runs is left alone)."""
    pid_file, _ = paths(data_dir)
    pid = _pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    progress(f"  dockerd (pid {pid}) stopped")
    return True

"""One ``harness run`` per stack at a time: a lock on its data dir and on each of its ports.

Two runs against the same data dir would share pid files and stores; two against the same ports
would test each other's services. So a run holds an exclusive ``flock`` on
``<data_dir>/harness-run.lock`` and on one file per service port (in a per-user folder under the
system temp dir, shared by every checkout on this machine) for as long as it runs. Each lock file
names its holder (pid, run id, start time), so a refused run can say who holds the stack.

``flock`` locks die with their process, so a run killed with SIGKILL leaves no lock behind, only a
file naming a dead pid: the next run takes the lock and reports that it recovered it.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.errors import RunbookError
from harness.result import now_iso
from suite import services
from suite.settings import Settings


class RunLocked(RunbookError):
    """Another ``harness run`` holds this stack."""

    def __init__(self, what: str, holder: dict) -> None:
        pid = holder.get("pid", "?")
        super().__init__(
            f"another harness run holds this stack ({what}): pid {pid}"
            + (f", run {holder['run_id']}" if holder.get("run_id") else "")
            + (f", started {holder['started_at']}" if holder.get("started_at") else "")
            + f"; wait for it to finish or stop it (kill {pid})")
        self.holder = holder


def port_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"suite-workbench-{os.getuid()}" / "port-locks"


def lock_files(settings: Settings) -> dict[str, Path]:
    """What is locked (``data dir X`` / ``port N``) -> its lock file."""
    files = {f"data dir {settings.data_dir}": settings.data_dir / "harness-run.lock"}
    for spec in services.SERVICES:
        port = settings.port(spec.name)
        files[f"port {port}"] = port_lock_dir() / f"{settings.host}-{port}.lock"
    return files


@dataclass
class RunLock:
    settings: Settings
    run_id: str
    recovered: list[str] = field(default_factory=list)  # stale holders found (dead pids)
    _fds: list[int] = field(default_factory=list)

    def acquire(self) -> RunLock:
        holder = {"pid": os.getpid(), "run_id": self.run_id, "started_at": now_iso()}
        try:
            for what, path in lock_files(self.settings).items():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    previous = _read(fd)
                    os.close(fd)
                    raise RunLocked(what, previous) from None
                self._fds.append(fd)
                previous = _read(fd)
                if previous.get("pid") and previous["pid"] != os.getpid() and not _alive(previous["pid"]):
                    self.recovered.append(f"{what}: pid {previous['pid']} (run {previous.get('run_id', '?')}) "
                                          "is gone")
                _write(fd, holder)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for fd in self._fds:
            try:
                _write(fd, {})  # nobody holds it now
            finally:
                os.close(fd)  # closing drops the flock
        self._fds.clear()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        return json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {}


def _write(fd: int, data: dict) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(data).encode() if data else b"")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False

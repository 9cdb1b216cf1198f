"""Shared fixtures: settings on free ports in a temp data dir, and real stacks brought up per phase."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import pytest

from suite import services
from suite.models import install_gemma
from suite.settings import Settings, default_data_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_offset() -> int:
    """An offset that puts every suite port on a free port (tests never touch a user's stack)."""
    base = Settings().ports.model_dump().values()
    for _ in range(200):
        offset = random.randrange(20000, 50000, 7)
        if all(_free(p + offset) for p in base):
            return offset
    raise RuntimeError("no free port range found")


def start_app_process(folder: Path, module: str, source: str, env: dict[str, str] | None = None,
                      deadline_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Write ``source`` as ``folder/module.py``, serve its ``app`` with uvicorn on a free loopback
    port in a child process, and return it once ``/health`` answers 200."""
    (folder / f"{module}.py").write_text(source)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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


__all__ = ["make_settings", "bring_up", "free_port_offset", "services", "start_app_process"]

"""Helpers for the tools and memory tests (no tests here): the real apps, in-process, on free ports.

Only memory and tools are started (uvicorn in threads); RAG and model tools meet a closed port and
must answer 503, which the tests check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from suite import services
from suite.settings import Settings
from tests.conftest import ServerThread, free_port_offset


def stack_settings(data_dir: Path, **overrides) -> Settings:
    """Settings whose every port is free, in ``data_dir``."""
    return Settings(data_dir=data_dir, port_offset=free_port_offset(), **overrides)


@contextmanager
def serve(settings: Settings, *names: str):
    """Run the named services (``memory``, ``tools``) of ``settings`` until the block ends."""
    running = []
    try:
        for name in names:
            app = services.get(name).load_factory()(settings)
            server = ServerThread(app, settings.host, settings.port(name))
            server.start()
            running.append(server)
        yield settings
    finally:
        for server in reversed(running):
            server.stop()


def cli(settings: Settings, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``suite ARGV`` in a subprocess against this stack's data dir."""
    env = dict(os.environ, SUITE_DATA_DIR=str(settings.data_dir), SUITE_PORT_OFFSET=str(settings.port_offset))
    return subprocess.run([sys.executable, "-m", "suite.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)


def cli_key(settings: Settings, role: str) -> str:
    proc = cli(settings, "keys", "create", "--role", role, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["key"]

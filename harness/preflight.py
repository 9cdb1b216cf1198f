"""Before a runbook that needs the stack: does every service of its phase answer on its port?

A runbook run by hand (papermill, Jupyter) has no ``harness run`` around it to bring the stack up or
to skip it after a failed bring-up. Without this check such a runbook ran its checks against closed
ports (the load runbook fired thousands of refused requests and passed gates over them).
``Runbook.needs_services`` calls ``unreachable`` and stops the notebook with one line::

    gateway :8000, inference-chat :8001 not reachable — run 01_bring_up or `suite up --phase 1`

Reachable means a TCP connection to the service's port is accepted: whether the service is healthy
is what the runbooks themselves check.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlparse

from harness.stack import up_command
from suite import services
from suite.settings import Settings


def _listening(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def unreachable(settings: Settings, phase: int, wait_s: float = 0.0, timeout_s: float = 1.0) -> list[str]:
    """``["gateway :8000", ...]``: the services of ``phase`` whose port accepts no connection, tried
    again every half second for up to ``wait_s`` (a stack still starting)."""
    deadline = time.monotonic() + wait_s
    while True:
        down = []
        for spec in services.for_phase(phase):
            url = urlparse(settings.url(spec.name))
            if not _listening(url.hostname or "127.0.0.1", url.port or 80, timeout_s):
                down.append(f"{spec.name} :{url.port}")
        if not down or time.monotonic() >= deadline:
            return down
        time.sleep(0.5)


def down_line(down: list[str], settings: Settings, phase: int) -> str:
    """The one line a runbook stops with."""
    return f"{', '.join(down)} not reachable — run 01_bring_up or `{up_command(phase, settings)}`"

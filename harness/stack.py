"""The one way the harness controls the stack: the ``suite`` CLI in a subprocess.

Bring-up, teardown, the failover drill (stop one service, start it again), the env port check
(which ports our own services hold) and key minting all run ``python -m suite.cli ...`` as an
operator would, whichever backend (process or docker) the settings configure. The harness never
calls the supervisor in-process.

The child gets exactly the caller's settings: every top-level field as one ``SUITE_<FIELD>`` JSON
variable (pydantic-settings decodes them), with inherited settings variables (``SUITE_<FIELD>`` and
``SUITE_<FIELD>__...``) dropped so none of them overrides a value the caller changed; other variables
(``SUITE_CONFIG``, the run's keys) pass through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from suite.settings import Settings, default_data_dir

Echo = Callable[[str], None]


def suite_command() -> list[str]:
    """The ``suite`` CLI of this interpreter (works from a kernel whose PATH lacks the venv)."""
    return [sys.executable, "-m", "suite.cli"]


def cli_env(settings: Settings | None = None) -> dict[str, str]:
    """The environment of a ``suite`` child that must see ``settings`` (None: this process's own)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if settings is None:
        return env
    fields = {f"SUITE_{name.upper()}" for name in Settings.model_fields}
    env = {k: v for k, v in env.items() if k.split("__", 1)[0] not in fields}
    for name, value in json.loads(settings.model_dump_json()).items():
        env[f"SUITE_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def run_suite(args: list[str], settings: Settings | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    """``suite ARGS`` to completion, output captured."""
    return subprocess.run([*suite_command(), *args], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(settings))


@dataclass
class UpOutcome:
    exit_code: int
    lines: list[str] = field(default_factory=list)  # what the CLI printed, JSON line excluded
    started: list[str] = field(default_factory=list)  # services this call started


def up(phase: int, settings: Settings | None = None, echo: Echo | None = None) -> UpOutcome:
    """``suite up --phase N --json``; ``echo`` gets each output line as it comes (models load slowly)."""
    proc = subprocess.Popen([*suite_command(), "up", "--phase", str(phase), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(settings))
    out = UpOutcome(0)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line.startswith("{"):
            out.started = json.loads(line).get("started", [])
            continue
        out.lines.append(line)
        if echo:
            echo(line)
    out.exit_code = proc.wait()
    return out


def down(names: list[str] | None = None, settings: Settings | None = None) -> int:
    """``suite down [NAMES]``; the CLI's exit code."""
    return run_suite(["down", *(names or [])], settings).returncode


def status(settings: Settings | None = None) -> list[dict]:
    """``suite status --json --all``: every configured service with ``running``, ``pid``, ``ready``."""
    proc = run_suite(["status", "--json", "--all"], settings)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError(f"suite status --json answered exit {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()[-500:]}") from None


def running(settings: Settings | None = None) -> dict[str, dict]:
    """The running services by name (from ``suite status``)."""
    return {s["name"]: s for s in status(settings) if s.get("running")}


def _env_prefix(settings: Settings) -> list[str]:
    """The environment a ``suite`` command typed by hand needs to reach this stack."""
    env = []
    if settings.port_offset:
        env.append(f"SUITE_PORT_OFFSET={settings.port_offset}")
    if settings.data_dir != default_data_dir().resolve():
        env.append(f"SUITE_DATA_DIR={settings.data_dir}")
    if settings.backend != "process":
        env.append(f"SUITE_BACKEND={settings.backend}")
    return env


def stop_command(names: list[str], settings: Settings | None = None) -> str:
    """The shell command that stops ``names`` of this stack (for a user who started them by hand)."""
    return " ".join([*_env_prefix(settings or Settings()), "suite", "down", *names])


def up_command(phase: int, settings: Settings | None = None) -> str:
    """The shell command that brings this stack up to ``phase``."""
    return " ".join([*_env_prefix(settings or Settings()), "suite", "up", "--phase", str(phase)])

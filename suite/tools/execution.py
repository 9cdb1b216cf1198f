"""Running a checked program: clean environment, resource limits, output capped while it is read.

* environment: only ``PATH`` (system directories), ``LANG``/``LC_ALL`` and what the caller adds (git's
  variables); nothing of the service's own environment (keys, ``HOME``, ``GIT_*``) leaks in;
* limits (``setrlimit`` in the child before ``exec``): CPU seconds (the timeout, rounded up, + 1),
  address space (``settings.tools.command_max_memory_bytes``), written file size
  (``max_file_bytes``), open files, no core dumps;
* its own session (process group), so a timeout or an overlong output kills it and its children;
* stdout and stderr are read in chunks and never held beyond ``max_bytes`` (+ one chunk): a program
  that writes more is killed and the result says ``truncated`` — a 1 MB ``cat`` costs 64 KB, not 1 MB.
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.tools.errors import ToolError

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
CHUNK = 65_536


@dataclass(frozen=True)
class Limits:
    cpu_s: int
    memory_bytes: int
    file_bytes: int
    open_files: int = 256

    def apply(self) -> None:
        """Runs in the child between fork and exec (``preexec_fn``): setrlimit calls only."""
        for which, value in ((resource.RLIMIT_CPU, self.cpu_s), (resource.RLIMIT_AS, self.memory_bytes),
                             (resource.RLIMIT_FSIZE, self.file_bytes), (resource.RLIMIT_NOFILE, self.open_files),
                             (resource.RLIMIT_CORE, 0)):
            resource.setrlimit(which, (value, value))


def limits_for(settings, timeout_s: float) -> Limits:
    tools = settings.tools
    return Limits(cpu_s=math.ceil(timeout_s) + 1, memory_bytes=tools.command_max_memory_bytes,
                  file_bytes=tools.max_file_bytes)


def clean_env(**extra: str) -> dict[str, str]:
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", **extra}


async def run_limited(argv: list[str], cwd: Path, timeout_s: float, max_bytes: int, limits: Limits,
                      env: dict[str, str]) -> dict[str, Any]:
    """Run ``argv`` (its program found on ``SAFE_PATH``); 504 on timeout, 503 if not installed."""
    program = shutil.which(argv[0], path=env.get("PATH", SAFE_PATH))
    if program is None:
        raise ToolError(503, f"'{argv[0]}' is not installed on this machine", "command_not_installed")
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        program, *argv[1:], cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        preexec_fn=limits.apply)  # setrlimit calls only: nothing in the child takes a lock
    over: list[str] = []

    async def pump(stream: asyncio.StreamReader, name: str) -> bytes:
        buf = bytearray()
        while chunk := await stream.read(CHUNK):
            if len(buf) <= max_bytes:
                buf += chunk[:max_bytes + 1 - len(buf)]
            if len(buf) > max_bytes and not over:
                over.append(name)
                _kill(proc)  # it has said more than will be kept: stop it rather than drain it
        return bytes(buf)

    try:
        out, err, _ = await asyncio.wait_for(
            asyncio.gather(pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr"), proc.wait()),
            timeout=timeout_s)
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        raise ToolError(504, f"'{argv[0]}' did not finish within {timeout_s:g}s and was killed",
                        "command_timeout") from None
    result = {"exit_code": proc.returncode,
              "stdout": out[:max_bytes].decode("utf-8", errors="replace"),
              "stderr": err[:max_bytes].decode("utf-8", errors="replace"),
              "truncated": bool(over), "duration_ms": round((time.perf_counter() - t0) * 1000, 1)}
    if over:
        result["killed"] = f"{over[0]} exceeded {max_bytes} bytes"
    elif proc.returncode is not None and proc.returncode < 0:
        result["killed"] = f"signal {_signal_name(-proc.returncode)}"
    return result


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name  # SIGXCPU: the CPU limit, SIGKILL: the memory or a timeout
    except ValueError:
        return str(number)


def _kill(proc: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

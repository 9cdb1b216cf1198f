"""Stopping and starting a part, only as its target allows.

Our own suite's services go through the ``suite`` CLI (``harness.stack``) and its supervisor; a part
of a target file is killed with its ``kill_command`` and started with its ``restart_command`` (none:
it comes back by itself, e.g. a container restart policy), each run by the shell with a deadline, its
output kept for the evidence. A part whose ``allow_kill`` is false, or whose host is beyond loopback
and not in ``allow_remote_hosts``, is refused with the reason.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass

import httpx

from harness.httpclient import verify
from harness.target.model import Part, Target


@dataclass
class CommandOutcome:
    command: str
    exit_code: int | None
    output: str
    took_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def describe(self) -> str:
        code = "timed out" if self.exit_code is None else f"exit {self.exit_code}"
        return f"`{self.command}` {code} in {self.took_s:.1f} s" + (f": {self.output[-300:]}" if self.output else "")


def refusal(target: Target, part: Part, what: str = "kill") -> str:
    """Why the run may not kill/restart ``part`` ("" when it may)."""
    if not part.allow_kill:
        return f"not allowed: {part.name} has allow_kill = false in the target (read-only by default)"
    if not target.remote_allowed(part):
        return (f"not allowed: {part.name} is on {part.host}, beyond loopback; fault drills reach it only when "
                f"allow_remote_hosts names {part.host}")
    if not target.ours and not part.kill_command:
        return f"not allowed: {part.name} has no kill_command"
    return ""


def run_command(command: str, timeout_s: float = 120.0, cwd: str | None = None) -> CommandOutcome:
    """A target's own command, through the shell as the user wrote it (the target file is trusted
    like a Makefile: it is the operator's), in the target file's folder; output captured, bounded in
    time. A command that leaves a server running must detach it (``setsid CMD &``)."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout_s,
                              cwd=cwd or None, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return CommandOutcome(command, None, out.strip(), round(time.perf_counter() - t0, 2))
    return CommandOutcome(command, proc.returncode, (proc.stdout + proc.stderr).strip(),
                          round(time.perf_counter() - t0, 2))


def kill(part: Part) -> CommandOutcome:
    """Run the part's ``kill_command`` (the caller checked ``refusal``)."""
    return run_command(part.kill_command or "false", cwd=part._folder)


def restart(part: Part) -> CommandOutcome | None:
    """Run the part's ``restart_command``; None when it has none (it comes back by itself)."""
    return run_command(part.restart_command, cwd=part._folder) if part.restart_command else None


def ready_at(part: Part, deadline: float, every_s: float = 0.25) -> float | None:
    """Epoch time at which the part's readiness path first answered 200, or None by ``deadline``
    (monotonic). An MCP part is ready when its endpoint answers HTTP again."""
    path = part.mcp_path if part.kind == "mcp" else part.ready or part.health or "/"
    with httpx.Client(timeout=5.0, verify=verify()) as client:
        while time.monotonic() < deadline:
            try:
                r = client.get(part.url(path))
                if r.status_code == 200 or (part.kind == "mcp" and r.status_code < 500):
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(every_s)
    return None


def gone_at(part: Part, deadline: float, every_s: float = 0.1) -> float | None:
    """Epoch time at which the part stopped answering (its kill took), or None by ``deadline``."""
    path = part.mcp_path if part.kind == "mcp" else part.health or "/"
    with httpx.Client(timeout=2.0, verify=verify()) as client:
        while time.monotonic() < deadline:
            try:
                client.get(part.url(path))
            except httpx.HTTPError:
                return time.time()
            time.sleep(every_s)
    return None

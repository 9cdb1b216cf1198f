"""System tools: git status/log of a repository inside the sandbox, an allow-listed command runner
with a timeout, and system information."""

from __future__ import annotations

import asyncio
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from suite.tools.errors import ToolError
from suite.tools.spec import ToolContext, ToolSpec, integer, schema, string

# repository config could name programs git would run (fsmonitor, hooks); switch them off
GIT_SAFE = ["-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "core.untrackedCache=false"]


async def _run(argv: list[str], cwd: Path, timeout_s: float, max_bytes: int,
               env: dict[str, str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except FileNotFoundError:
        raise ToolError(503, f"'{argv[0]}' is not installed on this machine", "command_not_installed") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=timeout_s)
    except TimeoutError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await proc.wait()
        raise ToolError(504, f"'{argv[0]}' did not finish within {timeout_s:g}s and was killed",
                        "command_timeout") from None
    return {"exit_code": proc.returncode,
            "stdout": out[:max_bytes].decode("utf-8", errors="replace"),
            "stderr": err[:max_bytes].decode("utf-8", errors="replace"),
            "truncated": len(out) > max_bytes or len(err) > max_bytes,
            "duration_ms": round((time.perf_counter() - t0) * 1000, 1)}


def _base_env(home: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": str(home)}


async def _git(ctx: ToolContext, args: dict[str, Any], *git_args: str) -> dict[str, Any]:
    real = ctx.sandbox.resolve(args.get("path", "."), must_exist=True)
    if not real.is_dir():
        raise ToolError(400, f"'{args.get('path', '.')}' is not a directory", "not_a_directory")
    env = _base_env(real)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1",
               GIT_CEILING_DIRECTORIES=os.pathsep.join(str(r.parent) for r in ctx.sandbox.roots))
    timeout, cap = ctx.settings.tools.command_timeout_s, ctx.settings.tools.command_max_output_bytes
    top = await _run(["git", *GIT_SAFE, "-C", str(real), "rev-parse", "--show-toplevel"], real, timeout, cap, env)
    toplevel = Path(os.path.realpath(top["stdout"].strip() or "/"))
    if top["exit_code"] != 0 or ctx.sandbox.root_of(toplevel) is None:
        raise ToolError(400, f"'{args.get('path', '.')}' is not inside a git repository in the sandbox",
                        "not_a_git_repository")
    result = await _run(["git", *GIT_SAFE, "-C", str(real), *git_args], real, timeout, cap, env)
    if result["exit_code"] != 0:
        raise ToolError(400, f"git failed: {result['stderr'].strip()[:300]}", "git_failed")
    result["repository"] = ctx.sandbox.display(toplevel)
    return result


async def git_status(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    result = await _git(ctx, args, "status", "--porcelain=v1", "--branch")
    lines = result["stdout"].splitlines()
    branch = lines[0][3:] if lines and lines[0].startswith("## ") else ""
    changes = [{"status": line[:2], "path": line[3:]} for line in lines if not line.startswith("## ")]
    return {"repository": result["repository"], "branch": branch, "clean": not changes, "changes": changes}


async def git_log(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    n = args.get("max_count", 10)
    result = await _git(ctx, args, "log", f"-n{n}", "--format=%H%x1f%an%x1f%aI%x1f%s")
    commits = []
    for line in result["stdout"].splitlines():
        sha, author, date, subject = (line.split("\x1f") + ["", "", "", ""])[:4]
        commits.append({"sha": sha, "author": author, "date": date, "subject": subject})
    return {"repository": result["repository"], "commits": commits}


def _check_argv(ctx: ToolContext, argv: list[str], cwd: Path) -> None:
    allowed = ctx.settings.tools.command_allowlist
    if not argv or argv[0] not in allowed or "/" in argv[0]:
        raise ToolError(403, f"command '{argv[0] if argv else ''}' is not in the allow-list "
                             f"({', '.join(allowed)})", "command_not_allowed")
    for arg in argv[1:]:
        # every operand (and every --option=value) is treated as a path and must stay in the sandbox
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else (None if arg.startswith("-")
                                                                                  else arg)
        if value:
            ctx.sandbox.resolve(value, base=cwd)


async def run_command(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    command = args["command"]
    try:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
    except ValueError as exc:
        raise ToolError(400, f"cannot parse command: {exc}", "invalid_command") from None
    cwd = ctx.sandbox.resolve(args.get("cwd", "."), must_exist=True)
    if not cwd.is_dir():
        raise ToolError(400, "cwd is not a directory", "not_a_directory")
    _check_argv(ctx, argv, cwd)
    limit = ctx.settings.tools.command_timeout_s
    timeout = min(float(args.get("timeout_s", limit)), limit)
    result = await _run(argv, cwd, timeout, ctx.settings.tools.command_max_output_bytes, _base_env(cwd))
    return {"argv": argv, "cwd": ctx.sandbox.display(cwd), **result}


def system_info(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    vm = psutil.virtual_memory()
    disk = psutil.disk_usage(str(ctx.sandbox.roots[0]))
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
            "load_avg": list(os.getloadavg()), "cpu_percent": psutil.cpu_percent(interval=None),
            "memory": {"total": vm.total, "available": vm.available, "percent": vm.percent},
            "sandbox_disk": {"total": disk.total, "free": disk.free, "percent": disk.percent},
            "boot_time": psutil.boot_time(), "profile": ctx.settings.profile}


REPO = string("folder inside a git repository in the sandbox", default=".")

TOOLS = (
    ToolSpec("git_status", "Git status", "Branch and changed files of a git repository inside the sandbox.",
             git_status, schema(path=REPO), read_only=True, idempotent=True),
    ToolSpec("git_log", "Git log", "Recent commits of a git repository inside the sandbox.",
             git_log, schema(path=REPO, max_count=integer("commits returned", 1, 200, 10)),
             read_only=True, idempotent=True),
    ToolSpec("run_command", "Run command",
             "Run an allow-listed command (no shell) in a sandbox folder with a timeout; every operand "
             "must be a path inside the sandbox.",
             run_command, schema(("command",),
                                 command={"description": "argv list, or a string split like a shell would",
                                          "anyOf": [{"type": "array", "items": {"type": "string"},
                                                     "minItems": 1, "maxItems": 64},
                                                    {"type": "string", "minLength": 1, "maxLength": 4000}]},
                                 cwd=string("working folder inside the sandbox", default="."),
                                 timeout_s={"type": "number", "exclusiveMinimum": 0, "maximum": 600,
                                            "description": "capped by settings.tools.command_timeout_s"}),
             read_only=False, destructive=False),
    ToolSpec("system_info", "System info", "Platform, CPU, memory and sandbox disk usage.",
             system_info, schema(), read_only=True, idempotent=False),
)

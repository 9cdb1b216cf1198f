"""System tools: git status/log of a repository inside the sandbox, an allow-listed command runner
with a timeout, and system information."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from typing import Any

import psutil

from suite.tools.commands import check_command
from suite.tools.errors import ToolError
from suite.tools.execution import clean_env, limits_for, run_limited
from suite.tools.gitrepo import GIT_OPTIONS, check_config, find_repository
from suite.tools.spec import ToolContext, ToolSpec, integer, schema, string


async def _git(ctx: ToolContext, args: dict[str, Any], *git_args: str) -> dict[str, Any]:
    """Run ``git GIT_ARGS`` on the vetted repository holding ``args['path']`` (see gitrepo)."""
    shown = str(args.get("path", "."))
    real = ctx.sandbox.resolve(shown, must_exist=True)
    if not real.is_dir():
        raise ToolError(400, f"'{shown[:200]}' is not a directory", "not_a_directory")
    tools = ctx.settings.tools
    timeout, cap = tools.command_timeout_s, tools.command_max_output_bytes
    limits = limits_for(ctx.settings, timeout)
    repo = find_repository(ctx.sandbox, real, shown[:200])
    await check_config(repo, limits, timeout)
    result = await run_limited(["git", *GIT_OPTIONS, *git_args], repo.worktree, timeout, cap, limits, repo.env())
    if result["exit_code"] != 0:
        raise ToolError(400, f"git failed: {result['stderr'].strip()[:300]}", "git_failed")
    result["repository"] = ctx.sandbox.display(repo.worktree)
    return result


async def git_status(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    result = await _git(ctx, args, "status", "--porcelain=v1", "--branch", "--ignore-submodules=all")
    lines = result["stdout"].splitlines()
    branch = lines[0][3:] if lines and lines[0].startswith("## ") else ""
    changes = [{"status": line[:2], "path": line[3:]} for line in lines if not line.startswith("## ")]
    return {"repository": result["repository"], "branch": branch, "clean": not changes, "changes": changes}


async def git_log(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    n = args.get("max_count", 10)
    result = await _git(ctx, args, "log", f"-n{n}", "--no-show-signature", "--no-color",
                        "--format=%H%x1f%an%x1f%aI%x1f%s")
    commits = []
    for line in result["stdout"].splitlines():
        sha, author, date, subject = (line.split("\x1f") + ["", "", "", ""])[:4]
        commits.append({"sha": sha, "author": author, "date": date, "subject": subject})
    return {"repository": result["repository"], "commits": commits}


MAX_ARGV = 64  # words of one command (program, options, operands), whichever form it is given in


def command_argv(command: str | list[str]) -> list[str]:
    """The argv of ``run_command``'s ``command``: a list as given, a string split like a shell would.
    Both forms have the same limit: a string of 4,000 characters once split into 1,991 operands
    where the list form stopped at 64."""
    try:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
    except ValueError as exc:
        raise ToolError(400, f"cannot parse command: {exc}", "invalid_command") from None
    if len(argv) > MAX_ARGV:
        raise ToolError(400, f"command has {len(argv)} words; at most {MAX_ARGV} (program, options and "
                             f"operands together), as a list or as a string", "too_many_arguments")
    return argv


def check_run_command(ctx: ToolContext, args: dict[str, Any]) -> None:
    """At request time: the command parses within the limits (the sandbox checks run with the call)."""
    command_argv(args["command"])


async def run_command(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """An allow-listed program on sandbox paths only (see commands: the sandbox parses the arguments)."""
    argv = command_argv(args["command"])
    cwd = ctx.sandbox.resolve(args.get("cwd", "."), must_exist=True)
    if not cwd.is_dir():
        raise ToolError(400, "cwd is not a directory", "not_a_directory")
    checked = check_command(ctx.sandbox, argv, cwd, ctx.settings.tools.command_allowlist)
    limit = ctx.settings.tools.command_timeout_s
    timeout = min(float(args.get("timeout_s", limit)), limit)
    result = await run_limited(checked.argv, cwd, timeout, ctx.settings.tools.command_max_output_bytes,
                               limits_for(ctx.settings, timeout), clean_env())
    return {"argv": checked.argv, "cwd": ctx.sandbox.display(cwd), **result}


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
             "Run an allow-listed command (no shell) in a sandbox folder with a timeout and resource "
             "limits; only the options of the command's table are accepted, every operand must be a path "
             "inside the sandbox, and output beyond the cap stops the command.",
             run_command, schema(("command",),
                                 command={"description": "argv list, or a string split like a shell would "
                                                         "(at most 64 words either way)",
                                          "anyOf": [{"type": "array",
                                                     "items": {"type": "string", "maxLength": 4000},
                                                     "minItems": 1, "maxItems": MAX_ARGV},
                                                    {"type": "string", "minLength": 1, "maxLength": 4000}]},
                                 cwd=string("working folder inside the sandbox", default="."),
                                 timeout_s={"type": "number", "exclusiveMinimum": 0, "maximum": 600,
                                            "description": "capped by settings.tools.command_timeout_s"}),
             read_only=False, destructive=False, check=check_run_command),
    ToolSpec("system_info", "System info", "Platform, CPU, memory and sandbox disk usage.",
             system_info, schema(), read_only=True, idempotent=False),
)

"""``run_command`` and the git tools on their own (no server): the sandbox owns argument parsing,
commands run clean and limited, git follows no indirection out and runs no configured program."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from suite.settings import Settings
from suite.testing import git as git_cmd
from suite.testing import git_repo
from suite.tools.errors import ToolError
from suite.tools.execution import Limits, clean_env, run_limited
from suite.tools.sandbox import Sandbox
from suite.tools.spec import ToolContext
from suite.tools.system import check_run_command, git_log, git_status, run_command

SECRET = "outside-secret-5d1e"


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    root = tmp_path / "sandbox"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("inside\n")
    (root / "-x").mkdir()  # a folder whose name reads as an option
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (root / "list.txt").write_text(f"{outside / 'secret.txt'}\0")  # a --files0-from list
    os.symlink(outside / "secret.txt", root / "link_out")
    os.symlink(outside, root / "dir_out")
    os.link(outside / "secret.txt", root / "hard.txt")
    os.mkfifo(root / "fifo")
    settings = Settings(data_dir=tmp_path, tools={"command_timeout_s": 5, "command_max_output_bytes": 4096})
    return ToolContext(settings=settings, sandbox=Sandbox([root], 1_000_000), http=None)


def run(ctx: ToolContext, command, **extra) -> dict:
    return asyncio.run(run_command(ctx, {"command": command, **extra}))


ATTACKS = [  # (argv, status): each once worked or is of the same family
    (["cat", "--", "-x/../../../../etc/hostname"], 403),  # traversal after '--'
    (["ls", "--", "-x/../../.."], 403),
    (["wc", "--files0-from=list.txt"], 403),  # response file naming outside paths
    (["wc", "--files0-from", "list.txt"], 403),
    (["wc", "--files0=list.txt"], 403),  # GNU long-option abbreviation
    (["wc", "--files0-fr=list.txt"], 403),
    (["cat", "/etc/hostname"], 403),
    (["cat", "docs/a.txt", "/etc/hostname"], 403),  # one good operand does not carry a bad one
    (["cat", "link_out"], 403),  # symlink out
    (["cat", "dir_out/secret.txt"], 403),
    (["cat", "hard.txt"], 403),  # hard link to an outside file
    (["wc", "-c", "hard.txt"], 403),
    (["cat", "fifo"], 400),  # would block
    (["head", "-n", "/etc/hostname"], 400),  # an option value that is a path where a count belongs
    (["head", "--lines=/etc/hostname"], 400),
    (["head", "-c/etc/hostname"], 400),
    (["tail", "--pid=1", "docs/a.txt"], 403),
    (["tail", "--follow=name", "docs/a.txt"], 403),
    (["ls", "-L", "dir_out"], 403),  # dereference
    (["ls", "--dereference", "."], 403),
    (["ls", "-R", "--hyperlink", "."], 403),
    (["ls", "-I", "x", "/"], 403),
    (["cat", "--show-all=/etc/hostname"], 403),  # a flag given a value
    (["cat", "%2e%2e/%2e%2e/etc/hostname"], 403),
    (["cat", "docs/a.txt\x00"], 400),
    (["echo", "/etc/hostname"], 403),
    (["echo", "-x", "hi"], 403),
    (["env"], 403),  # not allow-listed
    (["/bin/cat", "docs/a.txt"], 403),
    (["./cat", "docs/a.txt"], 403),
    (["sh", "-c", "cat /etc/hostname"], 403),
    ("cat 'unterminated", 400),
]


@pytest.mark.parametrize(("argv", "status"), ATTACKS, ids=[repr(a)[:60] for a, _ in ATTACKS])
def test_argument_injection_is_refused(ctx, argv, status):
    with pytest.raises(ToolError) as info:
        run(ctx, argv)
    assert info.value.status == status, info.value.message
    assert info.value.message and SECRET not in info.value.message


def test_the_string_form_has_the_list_forms_limit(ctx):
    """The attack: one string split into 1,991 operands where the list form stopped at 64."""
    flood = "echo " + " ".join(["a"] * 1990)
    for command in (flood, ["echo"] + ["a"] * 64, "echo " + " ".join(["a"] * 64)):
        with pytest.raises(ToolError) as exc:
            run(ctx, command)
        assert exc.value.status == 400 and exc.value.code == "too_many_arguments"
        with pytest.raises(ToolError):  # refused when requested, before it could wait for an approval
            check_run_command(ctx, {"command": command})
    assert run(ctx, "echo " + " ".join(["a"] * 63))["stdout"].split() == ["a"] * 63
    assert run(ctx, ["echo"] + ["a"] * 63)["stdout"].split() == ["a"] * 63


@pytest.mark.integration
def test_allowed_uses_work_and_operands_are_passed_resolved_after_our_own_double_dash(ctx):
    r = run(ctx, ["cat", "docs/a.txt"])
    assert (r["stdout"], r["exit_code"], r["argv"]) == ("inside\n", 0, ["cat", "--", "docs/a.txt"])
    r = run(ctx, ["ls", "--", "-x"])  # the folder named -x, as an operand
    assert r["exit_code"] == 0 and r["argv"] == ["ls", "--", "./-x"]
    assert run(ctx, ["head", "-1", "docs/a.txt"])["argv"] == ["head", "-n", "1", "--", "docs/a.txt"]
    assert run(ctx, "wc -l docs/a.txt")["stdout"].split()[0] == "1"
    assert run(ctx, ["ls", "-la", "docs"])["argv"] == ["ls", "-l", "-a", "--", "docs"]
    assert run(ctx, ["echo", "-n", "hello", "world"])["stdout"] == "hello world"
    r = run(ctx, ["cat", "a.txt"], cwd="docs")
    assert r["stdout"] == "inside\n" and r["cwd"] == "docs"


def test_a_command_without_an_argument_table_takes_no_options(ctx):
    ctx.settings.tools.command_allowlist.append("sort")
    assert run(ctx, ["sort", "docs/a.txt"])["stdout"] == "inside\n"
    for argv in (["sort", "-o", "docs/b.txt", "docs/a.txt"], ["sort", "--", "docs/a.txt"],
                 ["sort", "--files0-from=list.txt"]):
        with pytest.raises(ToolError) as info:
            run(ctx, argv)
        assert info.value.status == 403
    assert not (ctx.sandbox.roots[0] / "docs" / "b.txt").exists()


def test_environment_is_clean_and_the_working_folder_is_in_the_sandbox(ctx, monkeypatch):
    monkeypatch.setenv("SUITE_SECRET_TOKEN", "leak-me")
    ctx.settings.tools.command_allowlist.extend(["env", "pwd"])
    env = run(ctx, ["env"])["stdout"]
    assert "leak-me" not in env and "HOME=" not in env
    assert sorted(line.split("=")[0] for line in env.splitlines()) == ["LANG", "LC_ALL", "PATH"]
    assert run(ctx, ["pwd"])["stdout"].strip() == str(ctx.sandbox.roots[0])


def test_output_cap_is_enforced_while_reading(ctx):
    """A program writing without end is stopped at the cap: never buffered whole, never waited out."""
    big = ctx.sandbox.roots[0] / "big.txt"
    big.write_bytes(b"x" * 900_000)
    r = run(ctx, ["cat", "big.txt"])
    assert r["truncated"] is True and len(r["stdout"]) == 4096 and "exceeded 4096" in r["killed"]
    limits = Limits(cpu_s=30, memory_bytes=1 << 30, file_bytes=1 << 20)
    r = asyncio.run(run_limited(["cat", "/dev/zero"], ctx.sandbox.roots[0], 30, 4096, limits, clean_env()))
    assert r["truncated"] is True and len(r["stdout"]) == 4096


@pytest.mark.integration
def test_cpu_and_memory_limits_stop_a_program(ctx):
    root = ctx.sandbox.roots[0]
    cpu = Limits(cpu_s=1, memory_bytes=1 << 30, file_bytes=1 << 20)
    r = asyncio.run(run_limited(["sh", "-c", "while :; do :; done"], root, 60, 4096, cpu, clean_env()))
    assert r["exit_code"] < 0 and r["killed"] in ("signal SIGXCPU", "signal SIGKILL")
    mem = Limits(cpu_s=30, memory_bytes=64 << 20, file_bytes=1 << 20)
    r = asyncio.run(run_limited(["python3", "-c", "b = bytearray(512 << 20)"], root, 60, 4096, mem, clean_env()))
    assert r["exit_code"] != 0 and "MemoryError" in r["stderr"]


def test_timeout_kills(ctx):
    with pytest.raises(ToolError) as info:
        run(ctx, ["tail", "-f", "docs/a.txt"], timeout_s=0.5)
    assert (info.value.status, info.value.code) == (504, "command_timeout")


# -- git ------------------------------------------------------------------------------------------
def git(ctx: ToolContext, tool, path: str) -> dict:
    return asyncio.run(tool(ctx, {"path": path}))


@pytest.mark.integration
def test_git_tools_work_on_a_plain_repository(ctx):
    repo = git_repo(ctx.sandbox.roots[0] / "repo", "first commit")
    (repo / "new.txt").write_text("n")
    assert [c["subject"] for c in git(ctx, git_log, "repo")["commits"]] == ["first commit"]
    status = git(ctx, git_status, "repo")
    assert status["changes"] == [{"status": "??", "path": "new.txt"}] and status["repository"] == "repo"
    (repo / "sub").mkdir()
    assert git(ctx, git_log, "repo/sub")["repository"] == "repo"  # found from a folder inside
    worktree = ctx.sandbox.roots[0] / "wt"
    git_cmd(repo, "worktree", "add", "-q", str(worktree))  # a linked worktree inside the sandbox is fine
    assert git(ctx, git_log, "wt")["commits"][0]["subject"] == "first commit"


def test_git_indirections_out_of_the_sandbox_are_refused(ctx, tmp_path):
    root = ctx.sandbox.roots[0]
    other = git_repo(tmp_path / "elsewhere", "outside history")
    cases = {}
    (root / "gitfile").mkdir()
    (root / "gitfile" / ".git").write_text(f"gitdir: {other / '.git'}\n")
    cases["gitfile"] = "gitdir: file"
    (root / "gitfile_rel").mkdir()
    (root / "gitfile_rel" / ".git").write_text(f"gitdir: {os.path.relpath(other / '.git', root / 'gitfile_rel')}\n")
    cases["gitfile_rel"] = "gitdir: file"
    (root / "dotgit_link").mkdir()
    os.symlink(other / ".git", root / "dotgit_link" / ".git")
    cases["dotgit_link"] = ".git"
    wt = git_repo(root / "commondir", "inside")
    (wt / ".git" / "commondir").write_text(str(other / ".git"))
    cases["commondir"] = "commondir"
    alt = git_repo(root / "alternates", "inside")
    (alt / ".git" / "objects" / "info" / "alternates").write_text(str(other / ".git" / "objects") + "\n")
    cases["alternates"] = "alternates"
    linked = git_repo(root / "linked", "inside")
    os.rename(linked / ".git" / "refs", linked / ".git" / "refs_moved")
    os.symlink(other / ".git" / "refs", linked / ".git" / "refs")
    cases["linked"] = "symlink 'refs'"
    for folder, what in cases.items():
        for tool in (git_log, git_status):
            with pytest.raises(ToolError) as info:
                git(ctx, tool, folder)
            assert info.value.status == 403 and what in info.value.message, (folder, info.value.message)
            assert "outside history" not in info.value.message


@pytest.mark.parametrize("config", [
    '[core]\n\tfsmonitor = "touch {marker}"',
    '[core]\n\thooksPath = {hooks}',
    '[filter "x"]\n\tclean = "touch {marker}"\n\tsmudge = "touch {marker}"',
    '[diff "x"]\n\ttextconv = "touch {marker}"',
    '[core]\n\tpager = "touch {marker}"',
    '[core]\n\tsshCommand = "touch {marker}"',
    '[core]\n\tworktree = /',
    '[include]\n\tpath = {include}',
    '[log]\n\tshowSignature = true\n[gpg]\n\tprogram = "touch {marker}"',
    '[extensions]\n\tworktreeConfig = true',
    '[extensions]\n\tpartialClone = origin',
    '[alias]\n\tlog = "!touch {marker}"',
])
def test_repository_config_that_names_a_program_refuses_the_repository(ctx, tmp_path, config):
    repo = git_repo(ctx.sandbox.roots[0] / "evil", "inside")
    marker = tmp_path / "ran"
    hooks = repo / "hooks"
    hooks.mkdir()
    for hook in ("post-index-change", "pre-auto-gc", "reference-transaction"):
        (hooks / hook).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (hooks / hook).chmod(0o755)
    include = tmp_path / "included"
    include.write_text(f'[core]\n\tfsmonitor = "touch {marker}"\n')
    (repo / ".gitattributes").write_text("* filter=x diff=x\n")
    (repo / "f.txt").write_text("changed so status must look")
    with open(repo / ".git" / "config", "a") as fh:
        fh.write("\n" + config.format(marker=marker, hooks=hooks, include=include) + "\n")
    for tool in (git_status, git_log):
        with pytest.raises(ToolError) as info:
            git(ctx, tool, "evil")
        assert info.value.code == "git_config_refused" and info.value.status == 403
    assert not marker.exists()


def test_global_and_system_git_config_and_environment_are_ignored(ctx, tmp_path, monkeypatch):
    repo = git_repo(ctx.sandbox.roots[0] / "repo", "inside")
    marker = tmp_path / "ran"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[core]\n\tfsmonitor = "touch {marker}"\n\tpager = "touch {marker}"\n')
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", f"'core.fsmonitor'='touch {marker}'")
    (repo / "f.txt").write_text("changed")
    assert git(ctx, git_status, "repo")["changes"] == [{"status": " M", "path": "f.txt"}]
    assert not marker.exists()

"""New git repositories for the sandbox's git tools to be pointed at: the security runbook's attack
corpus (``harness.security.corpus``) and the tests build them the same way (``suite.testing``
re-exports these two for tests)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> None:
    """``git -C repo ARGS`` with a throwaway identity."""
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=suite", "-c", "user.email=suite@example.invalid",
                    *args], check=True, capture_output=True, timeout=60)


def git_repo(path: Path, subject: str) -> Path:
    """A new git repository at ``path`` with one commit (file ``f.txt``) whose subject is ``subject``."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    (path / "f.txt").write_text(subject)
    git(path, "add", "f.txt")
    git(path, "commit", "-qm", subject)
    return path

"""Git state of the project: the commit under test, and whether the tree is clean."""

import subprocess
from pathlib import Path

from harness.result import CheckResult, Stage, Status, timed
from suite.settings import project_root


def check_git(require_clean: bool = False, root: Path | None = None) -> CheckResult:
    root = root or project_root()
    with timed() as t:
        try:
            sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                 text=True, timeout=10)
            # the first status of a fresh clone passes every notebook through the nbstripout filter
            # (a Python start each): a minute on a busy 2-core box, a second after
            dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True,
                                   text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return CheckResult("env.git", "Git state", Stage.ENVIRONMENT, Status.WARN, target="a git checkout",
                               measured="git unavailable", detail=str(exc), **t.fields())
    if sha.returncode != 0:
        return CheckResult("env.git", "Git state", Stage.ENVIRONMENT, Status.WARN, target="a git checkout",
                           measured="not a git checkout", detail=str(root), **t.fields())
    changed = [ln for ln in dirty.stdout.splitlines() if ln.strip()]
    status = Status.PASS if not changed else (Status.FAIL if require_clean else Status.WARN)
    return CheckResult("env.git", "Git state", Stage.ENVIRONMENT, status,
                       target="clean tree" + (" (required)" if require_clean else ""),
                       measured=f"{sha.stdout.strip()}, {len(changed)} changed file(s)",
                       detail="; ".join(changed[:10]), **t.fields())

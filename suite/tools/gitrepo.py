"""Git repositories inside the sandbox, found and vetted in Python before git runs at all.

git follows indirections a path check never sees, and runs programs a repository's own config
names. So, before ``git_status`` / ``git_log`` start git:

* **discovery is ours**: from the given folder up to its sandbox root, the nearest ``.git``; a
  ``.git`` *file* (``gitdir: …``, submodules, linked worktrees), the git dir's ``commondir``, every
  ``objects/info/alternates`` entry (recursively) and every symlink inside the git dir must resolve
  inside the sandbox. git then gets ``GIT_DIR``, ``GIT_COMMON_DIR`` and ``GIT_WORK_TREE`` set to
  exactly what was checked, so it does no discovery of its own;
* **no repository-configured program**: the repository's config may hold only keys of an
  allow-list (``ALLOWED_CONFIG``: format, remotes, branches, identity, packing…); anything else —
  ``core.fsmonitor``, ``core.hooksPath``, ``filter.*``, ``diff.*.textconv``, ``core.sshCommand``,
  ``core.pager``, ``core.worktree``, ``include.*``, ``log.showSignature``/``gpg.program``,
  ``extensions.worktreeConfig`` or ``partialClone``… — refuses the repository (400, naming the key).
  The known program keys are also overridden with ``-c`` and git runs with ``--no-pager``;
* **no global or system config**: ``GIT_CONFIG_GLOBAL=/dev/null``, ``GIT_CONFIG_NOSYSTEM=1``,
  ``GIT_ATTR_NOSYSTEM=1``, no ``HOME``; ``GIT_OPTIONAL_LOCKS=0`` (status does not write the index).
* **safe.directory**: git's ownership check exists so another user's repository config cannot
  run programs as you; it applies to discovery, which git no longer does here. The config
  allow-list above is the replacement, and it holds whoever owns the repository.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from suite.tools.errors import ToolError
from suite.tools.execution import Limits, clean_env, run_limited
from suite.tools.sandbox import Sandbox

ALLOWED_CONFIG = re.compile(
    r"^(?:core\.(?:repositoryformatversion|filemode|bare|logallrefupdates|ignorecase|precomposeunicode"
    r"|symlinks|autocrlf|eol|safecrlf|checkstat|trustctime|abbrev|quotepath|commentchar|compression"
    r"|loosecompression|bigfilethreshold|splitindex|untrackedcache|preloadindex|multipackindex"
    r"|commitgraph|sparsecheckout|sparsecheckoutcone|warnambiguousrefs|deltabasecachelimit)"
    r"|remote\..+\.(?:url|pushurl|fetch|tagopt|prune|mirror)"
    r"|branch\..+\.(?:remote|pushremote|merge|rebase|description)"
    r"|user\.(?:name|email)|init\.defaultbranch|extensions\.(?:objectformat|preciousobjects)"
    r"|gc\.[a-z]+|pack\.[a-z]+|index\.[a-z]+|pull\.(?:rebase|ff)|push\.default"
    r"|i18n\.(?:commitencoding|logoutputencoding)|lfs\.repositoryformatversion)$")

GIT_OPTIONS = ["--no-pager", "-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null",
               "-c", "core.untrackedCache=false", "-c", "core.pager=cat", "-c", "log.showSignature=false",
               "-c", "protocol.allow=never", "-c", "core.sshCommand=false", "-c", "gpg.program=false"]
MAX_GITDIR_ENTRIES = 200_000
MAX_ALTERNATE_DEPTH = 5


@dataclass(frozen=True)
class Repository:
    worktree: Path
    gitdir: Path
    commondir: Path

    def env(self) -> dict[str, str]:
        return clean_env(GIT_DIR=str(self.gitdir), GIT_COMMON_DIR=str(self.commondir),
                         GIT_WORK_TREE=str(self.worktree), GIT_CONFIG_GLOBAL="/dev/null",
                         GIT_CONFIG_NOSYSTEM="1", GIT_ATTR_NOSYSTEM="1", GIT_OPTIONAL_LOCKS="0",
                         GIT_TERMINAL_PROMPT="0", GIT_NO_REPLACE_OBJECTS="1", GIT_PAGER="cat",
                         GIT_NO_LAZY_FETCH="1", GIT_PROTOCOL_FROM_USER="0")


def _refuse(message: str, code: str = "git_indirection") -> ToolError:
    return ToolError(400 if code == "not_a_git_repository" else 403, message, code)


def _inside(sandbox: Sandbox, path: Path, what: str) -> Path:
    real = Path(os.path.realpath(path))
    if sandbox.root_of(real) is None:
        raise _refuse(f"the repository's {what} leads outside the sandbox; refused")
    return real


def _read_small(path: Path, what: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(4097)[:4096].decode("utf-8", errors="replace")
    except OSError as exc:
        raise _refuse(f"cannot read the repository's {what}: {exc.strerror}") from None


def find_repository(sandbox: Sandbox, start: Path, shown: str) -> Repository:
    """The repository holding ``start`` (a real folder in the sandbox), every indirection checked."""
    root = sandbox.root_of(start)
    folder = start
    while root is not None:
        dotgit = folder / ".git"
        if os.path.lexists(dotgit):
            return _repository(sandbox, folder, dotgit)
        if folder == root:
            break
        folder = folder.parent
    raise _refuse(f"'{shown}' is not inside a git repository in the sandbox", "not_a_git_repository")


def _repository(sandbox: Sandbox, worktree: Path, dotgit: Path) -> Repository:
    target = _inside(sandbox, dotgit, ".git")
    if os.path.isfile(target):
        text = _read_small(target, ".git file")
        if not text.startswith("gitdir:"):
            raise _refuse("the repository's .git file does not start with 'gitdir:'")
        pointed = Path(text[len("gitdir:"):].strip())
        gitdir = _inside(sandbox, pointed if pointed.is_absolute() else target.parent / pointed, "gitdir: file")
    else:
        gitdir = target
    if not os.path.isdir(gitdir):
        raise _refuse("the repository's git directory is not a directory", "not_a_git_repository")
    commondir = gitdir
    if os.path.lexists(gitdir / "commondir"):
        pointed = Path(_read_small(gitdir / "commondir", "commondir").strip())
        commondir = _inside(sandbox, pointed if pointed.is_absolute() else gitdir / pointed, "commondir")
    for folder in dict.fromkeys((gitdir, commondir)):
        _check_symlinks(sandbox, folder)
    _check_alternates(sandbox, commondir / "objects", 0)
    return Repository(worktree, gitdir, commondir)


def _check_symlinks(sandbox: Sandbox, gitdir: Path) -> None:
    seen = 0
    for folder, dirs, files in os.walk(gitdir, followlinks=False):
        seen += len(dirs) + len(files)
        if seen > MAX_GITDIR_ENTRIES:
            raise _refuse(f"the git directory holds more than {MAX_GITDIR_ENTRIES} entries; not vetted")
        for name in (*dirs, *files):
            path = Path(folder) / name
            if os.path.islink(path):
                _inside(sandbox, path, f"symlink '{os.path.relpath(path, gitdir)}'")


def _check_alternates(sandbox: Sandbox, objects: Path, depth: int) -> None:
    listing = objects / "info" / "alternates"
    if not os.path.lexists(listing):
        return
    if depth >= MAX_ALTERNATE_DEPTH:
        raise _refuse("the repository's object alternates nest too deep")
    for line in _read_small(listing, "alternates").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pointed = Path(line)
        alt = _inside(sandbox, pointed if pointed.is_absolute() else objects / pointed, "object alternates")
        _check_symlinks(sandbox, alt)
        _check_alternates(sandbox, alt, depth + 1)


async def check_config(repo: Repository, limits: Limits, timeout_s: float) -> None:
    """Refuse the repository if its config holds a key outside ``ALLOWED_CONFIG``."""
    config = repo.commondir / "config"
    if not config.exists():
        return
    result = await run_limited(["git", "config", "--file", str(config), "--no-includes", "--null", "--list"],
                               repo.worktree, timeout_s, 1 << 20, limits, clean_env(
                                   GIT_DIR="/nonexistent", GIT_CONFIG_GLOBAL="/dev/null",
                                   GIT_CONFIG_NOSYSTEM="1"))  # no repository set up: a plain file read
    if result["exit_code"] != 0 or result["truncated"]:
        raise _refuse(f"the repository's config cannot be read: {result['stderr'].strip()[:200]}",
                      "git_config_refused")
    for record in result["stdout"].split("\0"):
        key = record.split("\n", 1)[0].strip()
        if key and not ALLOWED_CONFIG.match(key.lower()):
            raise _refuse(f"the repository's config sets '{key[:100]}', which git_status/git_log do not "
                          "allow (it can name a program git would run, or lead outside the sandbox)",
                          "git_config_refused")

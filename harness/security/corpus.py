"""The sandbox corpus against the live tool server: hostile paths, encodings, absolute paths, symlinks
and hard links planted in a scratch area of the sandbox, option values and ``--``, git indirections —
through every file-touching tool. 0 escapes.

The harness plants, on disk (as someone with host access would), a scratch folder in the first
sandbox root and a folder *outside* every root holding a secret file, a git repository with its own
history and a marker a configured program would create. Then each tool is called over REST with one
of the run's keys (``ROLE_OF``: no key gets more calls than the per-key rate limit allows; a 429 left
by an earlier runbook waits), the admin's where a developer would only park the call for approval:
the sandbox alone must refuse.

An escape is any answer that carries the secret (its text or its sha256) or the outside history,
a change to anything in the outside folder, or the marker appearing. Every refusal must be a 4xx in
the common error shape; a 5xx is a failure too.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from harness.httpclient import client
from harness.keys import RunKeys
from harness.result import CheckResult, Stage, Status, Timer
from suite.gitrepos import git_repo
from suite.settings import Settings

TIMEOUT = httpx.Timeout(60.0, connect=5.0)

PATHS = ["../outside/secret.txt", "../../../../etc/passwd", "SCRATCH/../../outside/secret.txt", "..", "./..",
         "/etc/passwd", "OUTSIDE/secret.txt", "/", "/proc/self/environ", "/dev/zero",
         "%2e%2e/%2e%2e/etc/passwd", "%252e%252e/%252e%252e/etc/passwd", "..%2f..%2fetc%2fpasswd",
         "SCRATCH%2f..%2f..%2fetc", "..\\..\\etc\\passwd", "SCRATCH/a.txt\x00.png", "\x00",
         "SCRATCH/link_out", "SCRATCH/dir_out/secret.txt", "SCRATCH/dir_out", "SCRATCH/hard.txt", "SCRATCH/fifo",
         "SCRATCH/-x/../../../../etc/passwd", "a" * 5000]
COMMANDS = [["cat", "--", "SCRATCH/-x/../../../../etc/hostname"], ["ls", "--", "SCRATCH/-x/../../../.."],
            ["wc", "--files0-from=SCRATCH/list.txt"], ["wc", "--files0-from", "SCRATCH/list.txt"],
            ["wc", "--files0=SCRATCH/list.txt"], ["cat", "SCRATCH/link_out"], ["cat", "SCRATCH/hard.txt"],
            ["cat", "SCRATCH/dir_out/secret.txt"], ["cat", "OUTSIDE/secret.txt"], ["ls", "-L", "SCRATCH/dir_out"],
            ["ls", "-R", "SCRATCH/dir_out/"], ["head", "-n", "OUTSIDE/secret.txt"],
            ["head", "--lines=OUTSIDE/secret.txt"], ["tail", "--follow=name", "SCRATCH/a.txt"],
            ["tail", "--pid=1", "SCRATCH/a.txt"], ["echo", "OUTSIDE/secret.txt"], ["cat", "SCRATCH/fifo"],
            ["/bin/cat", "OUTSIDE/secret.txt"], ["sh", "-c", "cat OUTSIDE/secret.txt"], "cat SCRATCH/a.txt /etc/passwd"]
GIT_REPOS = ("git_gitfile", "git_commondir", "git_alternates", "git_symlink_refs", "git_fsmonitor", "git_filter")


@dataclass
class Attempt:
    tool: str
    arguments: Any
    status: int | None
    escaped: bool
    note: str = ""


@dataclass
class Planted:
    root: Path  # the sandbox root
    scratch: Path  # inside it
    outside: Path  # outside every root
    secret: str
    history: str  # the subject of the outside repository's commit
    marker: Path  # a configured program would create it

    def fill(self, text: str) -> str:
        return (text.replace("SCRATCH", os.path.relpath(self.scratch, self.root))
                .replace("OUTSIDE", str(self.outside)))

    def fingerprint(self) -> dict[str, str]:
        """Every file under the outside folder with its sha256 (what must not change)."""
        out = {}
        for path in sorted(self.outside.rglob("*")):
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(self.outside))] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out


def plant(settings: Settings, outside_base: Path) -> Planted:
    """The scratch area in the sandbox and the outside folder beside the run's evidence."""
    root = Path(os.path.realpath(Path(settings.tools.sandbox_roots[0]).expanduser()
                                 if settings.tools.sandbox_roots else settings.data_dir / "sandbox"))
    tag = secrets.token_hex(4)
    scratch = root / f"security-scratch-{tag}"
    outside = Path(os.path.realpath(outside_base)) / f"outside-{tag}"
    if str(outside).startswith(str(root) + os.sep):
        raise RuntimeError(f"the outside folder {outside} lies inside the sandbox root {root}")
    secret = f"outside-secret-{secrets.token_hex(8)}"
    history = f"outside history {tag}"
    scratch.mkdir(parents=True)
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text(secret)
    other = git_repo(outside / "repo", history)
    (scratch / "a.txt").write_text("inside\n")
    (scratch / "-x").mkdir()
    (scratch / "list.txt").write_text(f"{outside / 'secret.txt'}\0")
    os.symlink(outside / "secret.txt", scratch / "link_out")
    os.symlink(outside, scratch / "dir_out")
    try:
        os.link(outside / "secret.txt", scratch / "hard.txt")
    except OSError:  # another filesystem: no hard link possible, nothing to test
        pass
    os.mkfifo(scratch / "fifo")
    marker = outside / "ran"
    (scratch / "git_gitfile").mkdir()
    (scratch / "git_gitfile" / ".git").write_text(f"gitdir: {other / '.git'}\n")
    wt = git_repo(scratch / "git_commondir", "inside")
    (wt / ".git" / "commondir").write_text(str(other / ".git"))
    alt = git_repo(scratch / "git_alternates", "inside")
    (alt / ".git" / "objects" / "info" / "alternates").write_text(str(other / ".git" / "objects") + "\n")
    linked = git_repo(scratch / "git_symlink_refs", "inside")
    shutil.rmtree(linked / ".git" / "refs")
    os.symlink(other / ".git" / "refs", linked / ".git" / "refs")
    for name, config in (("git_fsmonitor", f'[core]\n\tfsmonitor = "touch {marker}"\n'),
                         ("git_filter", f'[filter "x"]\n\tclean = "touch {marker}"\n')):
        repo = git_repo(scratch / name, "inside")
        (repo / ".gitattributes").write_text("* filter=x\n")
        (repo / "f.txt").write_text("changed")
        with open(repo / ".git" / "config", "a") as fh:
            fh.write(config)
    return Planted(root, scratch, outside, secret, history, marker)


def remove(planted: Planted) -> None:
    for folder in (planted.scratch, planted.outside):
        shutil.rmtree(folder, ignore_errors=True)


def _cases(p: Planted) -> dict[str, list[dict[str, Any]]]:
    paths = [p.fill(x) for x in PATHS]
    rel = os.path.relpath(p.scratch, p.root)
    return {
        "read_file": [{"path": x} for x in paths],
        "file_info": [{"path": x} for x in paths],
        "list_directory": [{"path": x} for x in ("..", "/", p.fill("SCRATCH/dir_out"), str(p.outside),
                                                 "%2e%2e", p.fill("SCRATCH/-x/../../.."))],
        "search_files": [{"path": rel, "contains": p.secret}, {"path": rel, "contains": "root:"},
                         {"path": "..", "contains": p.secret}, {"path": p.fill("SCRATCH/dir_out")},
                         {"path": str(p.outside)}],
        "write_file": [{"path": x, "content": "pwned", "create_dirs": True}
                       for x in (*paths[:12], p.fill("SCRATCH/link_out"), p.fill("SCRATCH/dir_out/new.txt"))],
        "edit_file": [{"path": x, "old_text": p.secret, "new_text": "pwned"}
                      for x in (p.fill("SCRATCH/link_out"), p.fill("SCRATCH/hard.txt"),
                                p.fill("SCRATCH/dir_out/secret.txt"), p.fill("OUTSIDE/secret.txt"),
                                "../outside/secret.txt")],
        "run_command": [{"command": [p.fill(a) for a in c] if isinstance(c, list) else p.fill(c)}
                        for c in COMMANDS],
        "git_status": [{"path": f"{rel}/{r}"} for r in GIT_REPOS],
        "git_log": [{"path": f"{rel}/{r}"} for r in GIT_REPOS],
        # last: deleting the links must leave what they point at
        "delete_file": [{"path": x} for x in (p.fill("SCRATCH/link_out"), p.fill("SCRATCH/dir_out"),
                                              p.fill("SCRATCH/dir_out/secret.txt"), p.fill("OUTSIDE/secret.txt"),
                                              "../outside/secret.txt", "/etc/hostname")],
    }


# whose key each tool is called with: each key stays under the per-key rate limit (60 calls a minute,
# all tools together), and writes use the admin's so the sandbox alone must refuse them
ROLE_OF = {"read_file": "guest", "file_info": "guest", "list_directory": "developer", "search_files": "developer",
           "run_command": "developer", "git_status": "developer", "git_log": "developer",
           "write_file": "admin", "edit_file": "admin", "delete_file": "admin"}


def _post(settings: Settings, tool: str, args: dict[str, Any], key: str) -> httpx.Response:
    """One call; a 429 (the key's minute is spent, e.g. by an earlier runbook) waits and tries again."""
    for _ in range(3):
        resp = client().post(f"{settings.url('tools')}/tools/{tool}", json=args, timeout=TIMEOUT,
                             headers={"Authorization": f"Bearer {key}"})
        if resp.status_code != 429:
            return resp
        time.sleep(min(61.0, float(resp.headers.get("retry-after", "5"))))
    return resp


def run_corpus(settings: Settings, outside_base: Path, keys: RunKeys) -> tuple[list[CheckResult], list[dict]]:
    """One result per tool (0 escapes, every refusal a 4xx with a message); every attempt as evidence."""
    planted = plant(settings, outside_base)
    before = planted.fingerprint()
    secret_hash = hashlib.sha256(planted.secret.encode()).hexdigest()
    results, attempts = [], []
    try:
        for tool, cases in _cases(planted).items():
            t = Timer()
            key = keys.for_role(ROLE_OF[tool])
            tried: list[Attempt] = []
            for args in cases:
                try:
                    resp = _post(settings, tool, args, key)
                except httpx.HTTPError as exc:
                    tried.append(Attempt(tool, args, None, False, f"no answer: {type(exc).__name__}"))
                    continue
                text = resp.text
                escaped = planted.secret in text or secret_hash in text or planted.history in text
                note = ""
                if resp.status_code >= 500:
                    note = f"5xx: {text[:150]}"
                elif resp.status_code >= 400 and not _has_message(resp):
                    note = "refusal without a message"
                tried.append(Attempt(tool, args, resp.status_code, escaped, note))
            changed = planted.fingerprint() != before
            ran = planted.marker.exists()
            escapes = [a for a in tried if a.escaped]
            bad = [a for a in tried if a.note]
            status = Status.FAIL if escapes or bad or changed or ran else Status.PASS
            problems = [f"ESCAPE {json.dumps(a.arguments)[:120]} -> {a.status}" for a in escapes]
            problems += [f"{json.dumps(a.arguments)[:100]}: {a.note}" for a in bad]
            if changed:
                problems.append("a file outside the sandbox changed")
            if ran:
                problems.append("a program configured in a repository ran")
            counts: dict[int | None, int] = {}
            for a in tried:
                counts[a.status] = counts.get(a.status, 0) + 1
            results.append(CheckResult(
                f"security.sandbox.{tool}", f"sandbox corpus through {tool}", Stage.SECURITY, status,
                target="0 escapes; every refusal a 4xx with a message", measured=f"{len(escapes)} escapes / {len(tried)}",
                detail="; ".join(problems[:10]) or "statuses " + ", ".join(f"{k}×{v}" for k, v in sorted(
                    counts.items(), key=lambda kv: kv[0] or 0)), **t.fields()))
            attempts += [dict(asdict(a), arguments=_printable(a.arguments)) for a in tried]
    finally:
        remove(planted)
    return results, attempts


def _has_message(resp: httpx.Response) -> bool:
    try:
        return bool(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return False


def _printable(value: Any) -> Any:
    text = json.dumps(value, ensure_ascii=True)
    return json.loads(text) if len(text) < 400 else text[:400] + "..."

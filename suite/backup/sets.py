"""Backup sets: a folder per backup, its ``manifest.json`` written last, verified before any restore.

A set is built in ``<backups>/<id>.partial/``; when every part is in, the manifest (each file's
path relative to the manifest, size and sha256; the source services and versions; counts; created-at)
is written to a temp file, fsynced and renamed, and only then the folder is renamed to ``<id>/``. So a
folder without ``.partial`` and with a manifest is whole; anything else is a leftover, removed by
``clean_partials``. ``verify_set`` re-hashes every file: one flipped byte and the set is refused.

Retention keeps the newest ``keep_last`` sets *and* every set younger than ``keep_days``; the rest go.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from suite.fsio import fsync_dir, fsync_file, write_json
from suite.models import sha256_file
from suite.retention import expired

MANIFEST = "manifest.json"
PARTIAL = ".partial"
FORMAT = 1
SET_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[a-z]{1,16}-[0-9a-f]{4}$")


class BackupError(Exception):
    """Root of the backup errors."""


class SetRefused(BackupError):
    """A set that does not verify: missing, changed or unexpected files, or no readable manifest."""

    def __init__(self, set_path: Path, problems: list[str]) -> None:
        super().__init__(f"backup set {set_path.name} refused: " + "; ".join(problems[:5])
                         + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""))
        self.set_path, self.problems = set_path, problems


def new_set_id(kind: str = "manual", now: float | None = None) -> str:
    stamp = datetime.fromtimestamp(now or time.time(), UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{kind}-{secrets.token_hex(2)}"


def check_set_id(set_id: str) -> str:
    if not isinstance(set_id, str) or not SET_ID.match(set_id):
        raise BackupError(f"not a backup set id: {set_id!r} (expected like 20260101T120000Z-manual-1a2b)")
    return set_id


def owned_like(path: Path, reference: Path) -> None:
    """Root making a folder in a data dir that belongs to the containers' user (the docker backend hands
    it over): the folder takes that owner, so the services can write into it. Nothing otherwise."""
    if os.geteuid() != 0:
        return
    st = reference.stat()
    if st.st_uid != 0 and os.stat(path).st_uid != st.st_uid:
        os.chown(path, st.st_uid, st.st_gid)


@dataclass
class SetBuilder:
    """A set being written: parts add files under ``folder``; ``finish`` seals it."""

    root: Path
    set_id: str
    kind: str
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def begin(cls, root: Path, kind: str = "manual") -> SetBuilder:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)  # sets hold copies of every database: private whatever the umask made
        owned_like(root, root.parent)
        builder = cls(root, new_set_id(kind), kind)
        builder.folder.mkdir(mode=0o700)
        owned_like(builder.folder, root)
        return builder

    @property
    def folder(self) -> Path:
        return self.root / f"{self.set_id}{PARTIAL}"

    def part_folder(self, part: str) -> Path:
        path = self.folder / part
        path.mkdir(exist_ok=True, mode=0o700)
        owned_like(path, self.folder)  # the RAG service writes its part into it
        return path

    def finish(self, source: dict[str, Any]) -> Path:
        """Hash every file, write the manifest last (atomically), then give the folder its final name."""
        files = []
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            os.chmod(path, 0o600)  # whoever wrote it (a service, this process) and under whatever umask
            fsync_file(path)
            files.append({"path": path.relative_to(self.folder).as_posix(), "size": path.stat().st_size,
                          "sha256": sha256_file(path)})
        for folder in sorted(p for p in self.folder.rglob("*") if p.is_dir()):
            fsync_dir(folder)  # the part folders' own entries (files renamed into them)
        manifest = {"format": FORMAT, "set": self.set_id, "kind": self.kind, "created_at": self.created_at,
                    "created_ts": time.time(), "source": source, "parts": self.parts, "files": files,
                    "bytes": sum(f["size"] for f in files)}
        write_json(self.folder / MANIFEST, manifest, mode=0o600)  # fsynced, and the folder with it
        final = self.root / self.set_id
        os.rename(self.folder, final)
        fsync_dir(self.root)
        return final

    def abandon(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def read_manifest(set_path: Path) -> dict[str, Any]:
    try:
        data = json.loads((set_path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SetRefused(set_path, [f"no {MANIFEST} (an unfinished or foreign folder)"]) from None
    except (OSError, ValueError) as exc:
        raise SetRefused(set_path, [f"{MANIFEST} unreadable: {exc}"]) from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise SetRefused(set_path, [f"{MANIFEST} has no file list"])
    return data


def verify_set(set_path: Path) -> dict[str, Any]:
    """The manifest, once every file it lists has its size and sha256 and nothing else is there."""
    set_path = Path(set_path)
    if set_path.name.endswith(PARTIAL):
        raise SetRefused(set_path, ["a '.partial' folder is an unfinished backup"])
    manifest = read_manifest(set_path)
    problems = []
    listed = set()
    for entry in manifest["files"]:
        rel = str(entry.get("path", ""))
        path = (set_path / rel).resolve()
        if rel.startswith("/") or ".." in Path(rel).parts or not path.is_relative_to(set_path.resolve()):
            problems.append(f"{rel}: path outside the set")
            continue
        listed.add(rel)
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif path.stat().st_size != entry.get("size"):
            problems.append(f"{rel}: {path.stat().st_size} bytes, manifest says {entry.get('size')}")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the manifest")
    extra = sorted(p.relative_to(set_path).as_posix() for p in set_path.rglob("*")
                   if p.is_file() and p.name != MANIFEST and p.relative_to(set_path).as_posix() not in listed)
    problems += [f"{rel}: not in the manifest" for rel in extra]
    if problems:
        raise SetRefused(set_path, problems)
    return manifest


def list_sets(root: Path) -> list[dict[str, Any]]:
    """Finished sets, oldest first, with their manifest summary (unreadable ones marked)."""
    out = []
    if not root.is_dir():
        return out
    for path in sorted(p for p in root.iterdir() if p.is_dir() and SET_ID.match(p.name)):
        try:
            m = read_manifest(path)
            out.append({"set": path.name, "path": str(path), "kind": m.get("kind"),
                        "created_at": m.get("created_at"), "created_ts": m.get("created_ts"),
                        "bytes": m.get("bytes"), "files": len(m["files"])})
        except SetRefused as exc:
            out.append({"set": path.name, "path": str(path), "error": str(exc)})
    return out


def newest_set(root: Path) -> Path | None:
    good = [s for s in list_sets(root) if "error" not in s]
    return Path(good[-1]["path"]) if good else None


def set_age_s(manifest: dict[str, Any], now: float | None = None) -> float:
    return max(0.0, (now or time.time()) - float(manifest.get("created_ts") or 0))


def prune(root: Path, keep_last: int, keep_days: float, now: float | None = None,
          dry_run: bool = False) -> dict[str, list[str]]:
    """Remove the sets neither among the newest ``keep_last`` nor younger than ``keep_days``."""
    sets = list_sets(root)
    dated = [(s["set"], float(s.get("created_ts") or 0)) for s in sets if "error" not in s]
    kept, removed = expired(dated, keep_last, keep_days, now)
    if not dry_run:
        for name in removed:
            _remove_tree(root / name)
    return {"kept": kept, "removed": removed, "unreadable": [s["set"] for s in sets if "error" in s]}


def clean_partials(root: Path, max_age_s: float, now: float | None = None) -> list[str]:
    """Remove ``.partial`` folders older than ``max_age_s`` (a crashed backup's leftovers)."""
    now = now or time.time()
    removed = []
    if root.is_dir():
        for path in root.iterdir():
            if path.is_dir() and path.name.startswith(".trash-"):  # an interrupted delete
                shutil.rmtree(path, ignore_errors=True)
            elif path.is_dir() and path.name.endswith(PARTIAL) and now - path.stat().st_mtime > max_age_s:
                _remove_tree(path)
                removed.append(path.name)
    return removed


def _remove_tree(path: Path) -> None:
    trash = path.with_name(f".trash-{path.name}")
    os.rename(path, trash)  # gone from listings at once, even if the delete is interrupted
    shutil.rmtree(trash, ignore_errors=True)

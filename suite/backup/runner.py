"""Take a backup set of the whole suite, restore one, and roll the live stack back to one.

* ``create_set``: the vector store through the RAG service's ``POST /admin/backup`` when it runs (it
  owns an embedded store and takes the copy under its write lock), directly otherwise; ``memory.db``
  and the tool server's ``security.db`` with SQLite's online backup API while the services keep
  serving. Manifest last, then retention.
* ``restore_set``: verify the whole set first (one flipped byte and nothing is touched), then the
  vector store, then each database — into a scratch folder (the restore drill) or the live paths.
* ``rollback``: safety backup first, stop the affected services, restore, start, health-check with
  retries; if anything fails, restore the safety backup the same way and say so. RTO (stop → ready)
  and RPO (age of the restored set) are measured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from suite import tls
from suite.backup.sets import (
    BackupError,
    SetBuilder,
    check_set_id,
    clean_partials,
    newest_set,
    prune,
    set_age_s,
    verify_set,
)
from suite.backup.sqlite import copy_database, install_database
from suite.backup.vectors import backup_vectors, restore_vectors
from suite.faultpoints import crash_point
from suite.settings import Settings, project_root
from suite.storage import SpaceGuard, is_disk_full, mib, tree_bytes
from suite.vectorstore import EdgeStore, StoreUnavailable, open_store

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
SERVICES_BY_PART = {"rag": "rag", "memory": "memory", "tools": "tools"}


def suite_version() -> str:
    try:
        return metadata.version("suite-workbench")
    except metadata.PackageNotFoundError:
        import tomllib

        try:
            return tomllib.loads((project_root() / "pyproject.toml").read_text())["project"]["version"]
        except (OSError, KeyError, ValueError):
            return "unknown"


def database_paths(settings: Settings) -> dict[str, Path]:
    """The SQLite databases a set holds, by part name."""
    from suite.memory.service import db_path
    from suite.tools.stores import security_db_path

    return {"memory": db_path(settings), "tools": security_db_path(settings), "auth": settings.key_store_path}


@contextlib.contextmanager
def admin_headers(settings: Settings) -> Iterator[dict[str, str]]:
    """Headers for the admin route of a running service. ``SUITE_ADMIN_KEY`` when set; else this
    process holds the data dir (the key store), so it mints an admin key that expires in two minutes
    and revokes it when done, as an operator at this machine may."""
    key = os.environ.get("SUITE_ADMIN_KEY", "")
    if key or not settings.auth.enabled:
        yield {"Authorization": f"Bearer {key}"} if key else {}
        return
    from suite.auth.keys import KeyStore

    store = KeyStore.open(settings.key_store_path)
    try:
        principal, key = store.create("admin", "suite backup (ephemeral)", ttl_s=120)
        try:
            yield {"Authorization": f"Bearer {key}"}
        finally:
            store.revoke(principal.key_id)
    finally:
        store.close()


# -- create ---------------------------------------------------------------------------------------
def estimate_set(settings: Settings) -> dict[str, int]:
    """Bytes a new set will take, per part, from what is on disk now: each database (and its WAL: the
    copy holds the committed pages), and for the embedded vector store twice the blocks its shards
    take (the snapshot is a sparse tar of them; the portable export holds the same vectors and
    payloads again, gzipped). A server store's snapshot is downloaded at whatever size the server
    makes it: not estimated."""
    out: dict[str, int] = {}
    for part, path in database_paths(settings).items():
        if path.is_file():
            wal = path.with_name(path.name + "-wal")
            out[part] = path.stat().st_size + (wal.stat().st_size if wal.is_file() else 0)
    chosen = settings.vector_store()
    if chosen["kind"] != "server" and Path(chosen["location"]).exists():
        out["rag"] = 2 * tree_bytes(Path(chosen["location"]))
    return out


def check_room(settings: Settings, progress: Progress) -> dict[str, int]:
    """Refuse (``BackupError``) before anything is written when the set will not fit above the reserve."""
    estimate = estimate_set(settings)
    need = sum(estimate.values())
    guard = SpaceGuard(settings.backup_dir, settings.storage.reserve_bytes, "the backup dir")
    reason = guard.refusal(need)
    if reason is not None:
        parts = ", ".join(f"{k} {mib(v)}" for k, v in estimate.items())
        raise BackupError(f"a backup set of about {mib(need)} ({parts}) will not fit: {reason}. Nothing was "
                          f"written; free space or set backup.dir to a larger disk")
    progress(f"estimated size {mib(need)}; {mib(guard.usage()[0])} free in {settings.backup_dir}")
    return estimate


def create_set(settings: Settings, kind: str = "manual", progress: Progress = log.info,
               apply_retention: bool = True) -> Path:
    """A sealed set, or an exception and no set: refused up front when it will not fit
    (``check_room``), and a partial set removed when anything fails on the way (a disk that fills
    up meanwhile included)."""
    root = settings.backup_dir
    for leftover in clean_partials(root, settings.backup.partial_max_age_s):
        progress(f"removed the leftover of an unfinished backup: {leftover}")
    check_room(settings, progress)
    builder = SetBuilder.begin(root, kind)
    progress(f"backup set {builder.set_id} -> {root}")
    try:
        rag = _rag_part(settings, builder, progress)
        if rag is not None:
            builder.parts["rag"] = rag
        for part, path in database_paths(settings).items():
            if not path.is_file():
                progress(f"  {part}: no database at {path}, skipped")
                continue
            t0 = time.monotonic()
            copied = copy_database(path, builder.part_folder(part) / path.name)
            builder.parts[part] = {"service": part, "version": suite_version(), "file": f"{part}/{path.name}",
                                   "source": str(path), **copied}
            progress(f"  {part}: {path.name} copied ({copied['bytes']} bytes, integrity {copied['integrity']}, "
                     f"{copied['tables']}) in {time.monotonic() - t0:.2f}s")
        crash_point("backup.parts_written")
        final = builder.finish(source={"suite_version": suite_version(), "host": socket.gethostname(),
                                       "python": platform.python_version(), "data_dir": str(settings.data_dir),
                                       "vector_store": settings.vector_store()})
    except BaseException as exc:
        builder.abandon()
        if is_disk_full(exc):
            raise BackupError(f"the disk filled up while set {builder.set_id} was written ({exc}); the partial "
                              f"set was removed, nothing else changed. Free space and retry") from exc
        raise
    if apply_retention:
        pruned = prune(root, settings.backup.keep_last, settings.backup.keep_days)
        if pruned["removed"]:
            progress(f"retention (newest {settings.backup.keep_last}, or younger than "
                     f"{settings.backup.keep_days} days): removed {', '.join(pruned['removed'])}")
    progress(f"backup set {final.name} sealed")
    return final


def _rag_part(settings: Settings, builder: SetBuilder, progress: Progress) -> dict[str, Any] | None:
    """Through the running RAG service (owner of the store), else directly; None when there is no store."""
    t0 = time.monotonic()
    try:
        httpx.get(settings.url("rag") + "/health", timeout=5.0, verify=tls.client_context(settings))  # open probe: is the owner running?
    except httpx.TransportError:
        resp = None
    else:
        with admin_headers(settings) as headers:
            resp = httpx.post(settings.url("rag") + "/admin/backup", json={"set": builder.set_id},
                              headers=headers, timeout=httpx.Timeout(900.0, connect=2.0),
                              verify=tls.client_context(settings))
    if resp is not None:
        if resp.status_code != 200:
            raise BackupError(f"the rag service refused the backup: HTTP {resp.status_code} {resp.text[:300]}")
        part = resp.json()
        how = "by the rag service"
    else:
        chosen = settings.vector_store()
        if chosen["kind"] != "server" and not Path(chosen["location"]).exists():
            progress(f"  rag: no vector store at {chosen['location']}, skipped")
            return None
        store = open_store(settings)  # StoreUnavailable if another process holds it
        try:
            part = vector_part(store, builder.part_folder("rag"))
        finally:
            store.close()
        how = "directly (rag service not running)"
    counts = {name: c["points"] for name, c in part["collections"].items()}
    progress(f"  rag: {part['store']['kind']} store, {counts} points, {how}, {time.monotonic() - t0:.2f}s")
    return part


def vector_part(store, folder: Path) -> dict[str, Any]:
    """The manifest part of a vector store backup (also what the rag service's route returns)."""
    part = backup_vectors(store, folder)
    prefix = folder.name
    for entry in part["collections"].values():
        for key in ("snapshot", "export", "config"):
            if entry.get(key):
                entry[key] = f"{prefix}/{entry[key]}"
    return {"service": "rag", "version": suite_version(), **part}


# -- restore --------------------------------------------------------------------------------------
def resolve_set(settings: Settings, name: str) -> Path:
    """A set by id, by path, or ``latest``."""
    if name == "latest":
        found = newest_set(settings.backup_dir)
        if found is None:
            raise BackupError(f"no backup set in {settings.backup_dir}")
        return found
    path = Path(name)
    if path.is_dir():
        return path.resolve()
    return settings.backup_dir / check_set_id(name)


def restore_set(settings: Settings, set_path: Path, into: Path | None = None, exact: bool = True,
                progress: Progress = log.info) -> dict[str, Any]:
    """Verify ``set_path`` whole, then restore it: into the scratch folder ``into`` (laid out as a data
    dir, vectors in an edge store), or over the live paths (services stopped). A scratch restore that
    fails leaves no scratch folder behind."""
    manifest = verify_set(set_path)  # SetRefused before anything is touched
    progress(f"set {set_path.name}: {len(manifest['files'])} files verified (size and sha256)")
    if into is not None:
        into = Path(into)
        if into.exists() and any(into.iterdir()):
            raise BackupError(f"restore target {into} is not empty")
        into.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return _restore_parts(settings, set_path, manifest, into, exact, progress)
    except BaseException:
        if into is not None:
            shutil.rmtree(into, ignore_errors=True)
        raise


def _restore_parts(settings: Settings, set_path: Path, manifest: dict[str, Any], into: Path | None,
                   exact: bool, progress: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {"set": set_path.name, "created_at": manifest.get("created_at"),
                           "rpo_s": round(set_age_s(manifest), 1), "into": str(into) if into else "live"}
    rag = manifest["parts"].get("rag")
    if rag is not None:
        store = EdgeStore(into / "edge") if into is not None else open_store(settings)
        try:
            out["rag"] = restore_vectors(store, set_path, rag, exact=exact)
        finally:
            store.close()
        progress(f"  rag: {out['rag']}")
    live = database_paths(settings)
    for part in ("memory", "tools", "auth"):
        entry = manifest["parts"].get(part)
        if entry is None:
            continue
        if part == "auth" and into is None:
            # Every service reads the key store while it runs, and a rolled-back key store would
            # bring back keys revoked since the set was taken: a live rollback never touches it.
            # Disaster recovery restores it into a scratch dir and copies it with the stack down.
            progress("  auth: the key store is not rolled back (revoked keys stay revoked); restore it with "
                     "--into DIR and copy it with the whole stack down if it was lost")
            out[part] = {"skipped": "live key store kept"}
            continue
        dest = (into / part / live[part].name) if into is not None else live[part]
        restored = install_database(set_path / entry["file"], dest)
        if restored["tables"] != entry["tables"]:
            raise BackupError(f"{part}: restored row counts {restored['tables']} differ from the manifest "
                              f"{entry['tables']}")
        out[part] = {"path": str(dest), **restored}
        progress(f"  {part}: {dest} ({restored['tables']})")
    return out


# -- rollback -------------------------------------------------------------------------------------
class RollbackFailed(BackupError):
    """Neither the chosen set nor the safety backup came back healthy."""


def _healthy(settings: Settings, names: list[str], progress: Progress) -> None:
    from suite.services import get
    from suite.supervisor.base import probe

    pause = settings.backup.health_backoff_s
    for attempt in range(1, settings.backup.health_retries + 1):
        failing = {n: d for n in names for ok, d in [probe(settings.url(n) + get(n).ready_path, 10, verify=tls.client_context(settings))] if not ok}
        if not failing:
            return
        progress(f"  health {attempt}/{settings.backup.health_retries}: not ready: {failing}")
        if attempt < settings.backup.health_retries:
            time.sleep(pause)
            pause = min(pause * 2, 10.0)
    raise BackupError(f"not healthy after {settings.backup.health_retries} checks: {failing}")


def rollback(settings: Settings, set_path: Path, backend, progress: Progress = log.info) -> dict[str, Any]:
    """See the module docstring. ``backend`` is the supervisor backend (``up``/``down``/``status``)."""
    from suite.services import get

    manifest = verify_set(set_path)  # refuse a bad set before stopping anything
    affected = [SERVICES_BY_PART[p] for p in ("rag", "memory", "tools") if p in manifest["parts"]]
    running = [s.name for s in backend.status() if s.running]
    phase = max([get(n).phase for n in running] or [3])
    safety = create_set(settings, kind="safety", progress=progress, apply_retention=False)
    progress(f"safety backup {safety.name} taken; stopping {', '.join(affected)}")
    result: dict[str, Any] = {"set": set_path.name, "safety_set": safety.name, "services": affected,
                              "rpo_s": round(set_age_s(manifest), 1)}
    t_stop = time.monotonic()
    try:
        _restore_and_start(settings, set_path, affected, phase, backend, progress)
        result.update(outcome="restored", rto_s=round(time.monotonic() - t_stop, 2))
        progress(f"rolled back to {set_path.name}: healthy; RTO {result['rto_s']}s, RPO {result['rpo_s']}s")
        return result
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        progress(f"!!! ROLLBACK TO {set_path.name} FAILED ({result['error'][:300]}) — RETURNING TO THE "
                 f"SAFETY BACKUP {safety.name} !!!")
    try:
        _restore_and_start(settings, safety, affected, phase, backend, progress)
    except Exception as exc:
        raise RollbackFailed(f"rollback to {set_path.name} failed ({result['error']}) and so did the return "
                             f"to the safety backup {safety.name}: {exc}") from exc
    result.update(outcome="returned_to_safety", rto_s=round(time.monotonic() - t_stop, 2))
    progress(f"!!! back on the safety backup {safety.name}: healthy; the stack runs the data it had before "
             f"the rollback !!!")
    return result


def _restore_and_start(settings: Settings, set_path: Path, affected: list[str], phase: int, backend,
                       progress: Progress) -> None:
    backend.down(affected)
    try:
        restore_set(settings, set_path, into=None, exact=True, progress=progress)
    except StoreUnavailable as exc:
        raise BackupError(f"the vector store is still held after stopping rag: {exc}") from None
    backend.up(phase, progress=progress)
    _healthy(settings, affected, progress)

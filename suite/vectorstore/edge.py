"""Qdrant Edge as the embedded vector store: one ``EdgeShard`` per collection, in process.

Qdrant Edge (``qdrant-edge-py``, pinned: the API is beta) is the Qdrant server's own engine as a library —
HNSW, WAL, payload indexes, filters, and snapshots in the server's shard format. Layout under
``rag.edge_path`` (default ``<data_dir>/edge``)::

    .lock                          flock held by the one process that owns the store
    <collection>/collection.json   our config beside the shard (see ``edge_config``)
    <collection>/shard/            the EdgeShard: edge_config.json, segments/, wal/

Design, with the measurement behind each choice (this machine, 2 cores, 384-dim vectors):

* ``optimize()`` (qdrant-edge-py 0.9.0) holds the GIL for its whole run — 20k points took 8-20 s in
  which no other Python thread ran once. So it never runs in the service's process: when
  ``rag.optimize_threshold`` points were written since the last one, a background thread flushes and
  copies the shard (writes wait for the copy; queries do not), a child process
  (``edge_optimize``) optimizes the copy, and the copy is swapped in under a short exclusive lock,
  replaying the writes that arrived meanwhile. Queries run on the live shard throughout and wait only
  for the swap (close + load: ~60 ms at 20k points).
* ``query``, ``update`` and ``count`` release the GIL, so queries run beside writes and each other; a
  per-collection readers-writer lock keeps them off a shard that is being swapped or closed.
* Swaps are crash-safe: the live shard becomes ``shard.old`` before the new one moves in, and
  ``shard.old`` goes only after the replayed writes are flushed. At open, a left-over ``shard.old``
  wins (the swap did not finish) and copies are removed; either way no acknowledged write is lost.
* Segments smaller than the threshold stay plain (searched exactly): at 5,000 points that costs about
  1 ms, so an index is *current* while fewer points than the threshold wait for an optimize.
* A document is replaced whole or not at all. Its new chunks go in as **one** upsert operation (one
  WAL record, replayed whole or not at all after a crash; chunk ``n`` has the same point id in every
  version, so the new version overwrites the old one's chunks). Only a document that shrinks needs a
  second operation, deleting the old version's chunks past the new end; before the first, the
  store notes the intent (``intents.json``: old and new chunk counts, and a revision the new chunks
  carry in their payload) and clears it after the second. At open, an intent whose new chunks all
  carry its revision has its old tail deleted; otherwise the upsert never landed and the old version
  stands. Either way one version, never a mix.
* Every acknowledged write is in the shard's WAL (a process crash loses nothing). ``flush`` (the RAG
  service calls it once per ``/index``) also makes it survive a power cut.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from suite.faultpoints import crash_point
from suite.fsio import fsync_dir, write_json
from suite.storage import MiB, SpaceGuard, tree_bytes
from suite.vectorstore.base import (
    CollectionInfo,
    CollectionNotFound,
    DimensionMismatch,
    Hit,
    Point,
    StoreError,
    StoreUnavailable,
    Where,
    check_where,
    hit_from_payload,
    point_from_payload,
    point_id,
)
from suite.vectorstore.edge_config import (
    META_FILE,
    SHARD_DIR,
    CollectionMeta,
    engine_version,
    now_iso,
    shard_config,
)
from suite.vectorstore.rwlock import RWLock

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")  # the RAG API's collection pattern
UPSERT_BATCH = 256
OPTIMIZE_TIMEOUT_S = 3600.0

INTENTS_FILE = "intents.json"  # per collection: shrinking replacements under way (see the docstring)
REV = "rev"  # payload key: the replacement a shrunk document's chunks were written by

# An operation as written to a shard, kept to replay onto a swapped-in copy: ("delete", doc_id),
# ("delete_ids", [point id, ...]) or ("upsert", [Point, ...]).
Op = tuple[str, Any]


def _match(key: str, value: Any) -> qe.FieldCondition:
    match = qe.MatchAny(value) if isinstance(value, list) else qe.MatchValue(value)
    return qe.FieldCondition(key=key, match=match)


def _filter(doc_id: str | None = None, where: Where | None = None) -> qe.Filter | None:
    conditions = [_match(key, value) for key, value in check_where(where)]
    if doc_id is not None:
        conditions.append(_match("doc_id", doc_id))
    return qe.Filter(must=conditions) if conditions else None


def _apply(shard: qe.EdgeShard, op: Op) -> None:
    kind, arg = op
    if kind == "delete":
        shard.update(qe.UpdateOperation.delete_points_by_filter(_filter(doc_id=arg)))
    elif kind == "delete_ids":
        shard.update(qe.UpdateOperation.delete_points(list(arg)))
    elif kind == "upsert_whole":  # one document: one operation, so a crash leaves all of it or none
        points, rev = arg
        extra = {REV: rev} if rev else {}
        shard.update(qe.UpdateOperation.upsert_points([qe.Point(p.id, p.vector, {**p.payload(), **extra})
                                                       for p in points]))
    else:
        for start in range(0, len(arg), UPSERT_BATCH):
            batch = [qe.Point(p.id, p.vector, p.payload()) for p in arg[start:start + UPSERT_BATCH]]
            shard.update(qe.UpdateOperation.upsert_points(batch))



def _op_bytes(ops: list[Op]) -> int:
    """About what the operations add on disk: WAL record and segment copy of each point (vector as
    float32, text and metadata as JSON), twice."""
    total = 0
    for kind, arg in ops:
        points = arg[0] if kind == "upsert_whole" else arg if kind == "upsert" else []
        total += sum(len(p.vector) * 4 + len(p.text.encode()) + 200 for p in points)
    return 2 * total


def _vector(record_vector: Any) -> list[float]:
    """The default (unnamed) dense vector of a record, whatever shape the binding returns."""
    if isinstance(record_vector, dict):
        record_vector = record_vector.get("", next(iter(record_vector.values()), []))
    return list(record_vector or [])


def _remove(path: Path) -> None:
    """Rename away first (atomic), then delete: a crash mid-delete leaves only a ``.trash-`` folder."""
    if not path.exists():
        return
    trash = path.parent / f".trash-{uuid.uuid4().hex[:12]}"
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


@dataclass
class _Optimize:
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None
    proc: subprocess.Popen | None = None


@dataclass
class _Collection:
    name: str
    folder: Path
    meta: CollectionMeta
    shard: qe.EdgeShard
    lock: RWLock = field(default_factory=RWLock)
    closed: bool = False
    generation: int = 0  # bumped when the shard is replaced from outside (restore): stale copies are dropped
    journal: list[Op] | None = None  # writes made while a copy is being optimized
    optimizing: _Optimize | None = None

    @property
    def shard_path(self) -> Path:
        return self.folder / SHARD_DIR


class EdgeStore:
    """The ``VectorStore`` contract on Qdrant Edge shards (see the module docstring for the design)."""

    kind = "edge"

    def __init__(self, path: str | Path, optimize_threshold: int = 5000, optimize_threads: int = 1,
                 auto_optimize: bool = True, reserve_bytes: int = 64 * MiB, lock_wait_s: float = 0.0) -> None:
        self.root = Path(path)
        self.lock_wait_s = lock_wait_s  # how long to wait for a predecessor (a killed service still exiting)
        self.space = SpaceGuard(self.root, reserve_bytes, "the vector store")
        self.location = str(self.root)
        self.threshold = optimize_threshold
        self.threads = optimize_threads
        self.auto_optimize = auto_optimize
        self.notices: list[str] = []
        self._write = threading.RLock()  # one writer at a time, over every collection
        self._colls: dict[str, _Collection] = {}
        self._closing = False
        self._closed = False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the edge store at {self.root}: {exc}") from None
        self._lock_fd = self._take_lock()
        try:
            self._open_all()
        except BaseException:
            self._close_shards()
            os.close(self._lock_fd)
            raise

    # -- lifecycle ------------------------------------------------------------------------------
    def _take_lock(self) -> int:
        """The store's owner lock. A service restarted right after a kill -9 can find its predecessor
        still exiting (its descriptors, the lock among them, are closed last): it waits up to
        ``lock_wait_s`` for the lock before refusing."""
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
        os.close(fd)
        waited = f" (waited {self.lock_wait_s:g} s)" if self.lock_wait_s else ""
        raise StoreUnavailable(f"the edge store at {self.root} is open in another process (or another store "
                               f"object){waited}: one owner at a time — stop the rag service first")

    def _open_all(self) -> None:
        for leftover in [*self.root.glob(".creating-*"), *self.root.glob(".trash-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir() and NAME.match(p.name)):
            if not (folder / SHARD_DIR).exists() and not (folder / "shard.old").exists():
                log.warning("ignoring %s: no shard in it", folder)
                continue
            self._recover(folder)
            meta = self._read_meta(folder)
            try:
                shard = qe.EdgeShard.load(str(folder / SHARD_DIR))
            except Exception as exc:
                raise StoreUnavailable(f"cannot open the edge shard of collection '{folder.name}' at "
                                       f"{folder / SHARD_DIR}: {exc}") from None
            self._finish_intents(folder, shard)
            info = shard.info()
            # after a crash the persisted counter may be behind: the shard's own counts bound it
            meta.pending_points = max(meta.pending_points, info.points_count - info.indexed_vectors_count)
            self._colls[folder.name] = _Collection(folder.name, folder, meta, shard)

    def _recover(self, folder: Path) -> None:
        """Finish or undo what a process that died mid-swap left behind (see the module docstring)."""
        old, live = folder / "shard.old", folder / SHARD_DIR
        if old.exists():
            if live.exists():
                _remove(live)
            os.rename(old, live)
            fsync_dir(folder)
            self.notices.append(f"collection '{folder.name}': a shard swap (optimize or restore) was "
                                f"interrupted; the shard from before it was put back")
            log.warning(self.notices[-1])
        for leftover in [*folder.glob("shard.optimizing-*"), *folder.glob("shard.incoming-*"),
                         *folder.glob(".trash-*")]:
            shutil.rmtree(leftover, ignore_errors=True)

    def _finish_intents(self, folder: Path, shard: qe.EdgeShard) -> None:
        """Complete or drop the shrinking replacements a crash cut off (see the module docstring)."""
        path = folder / INTENTS_FILE
        try:
            intents = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except ValueError:  # written atomically, so never torn; refuse to guess
            raise StoreUnavailable(f"{path} is unreadable; restore the collection from a backup") from None
        for doc_id, intent in intents.items():
            new = [point_id(doc_id, n) for n in range(intent["chunks"])]
            records = shard.retrieve(new, True, False)
            landed = len(records) == len(new) and all((r.payload or {}).get(REV) == intent["rev"] for r in records)
            if landed:
                shard.update(qe.UpdateOperation.delete_points(
                    [point_id(doc_id, n) for n in range(intent["chunks"], intent["old"])]))
            self.notices.append(f"collection '{folder.name}': the replacement of document '{doc_id}' was "
                                f"interrupted; {'the new' if landed else 'the old'} version stands, whole")
            log.warning(self.notices[-1])
        shard.flush()
        path.unlink()
        fsync_dir(folder)

    def _read_meta(self, folder: Path) -> CollectionMeta:
        try:
            return CollectionMeta.load(folder)
        except (OSError, ValueError, TypeError) as exc:
            meta = CollectionMeta.rebuild(folder)
            meta.save(folder)
            self.notices.append(f"collection '{folder.name}': {META_FILE} was unreadable ({exc}); "
                                f"rebuilt from the shard")
            log.warning(self.notices[-1])
            return meta

    def close(self) -> None:
        if self._closed:
            return
        self._closing = True
        jobs = [c.optimizing for c in list(self._colls.values()) if c.optimizing]
        for job in jobs:
            if job.proc is not None and job.proc.poll() is None:
                job.proc.kill()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout=30)
        with self._write:
            self._close_shards()
            self._closed = True
        os.close(self._lock_fd)

    def _close_shards(self) -> None:
        for c in self._colls.values():
            if c.closed:
                continue
            with c.lock.exclusive():
                try:
                    c.shard.flush()
                    c.shard.close()
                finally:
                    c.closed = True
            c.meta.save(c.folder)

    def ping(self) -> None:
        if self._closed or not self.root.is_dir():
            raise StoreUnavailable(f"the edge store at {self.root} is closed or gone")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "location": self.location,
                               "state": "closed" if self._closed else "open", "engine": engine_version(),
                               "indexes": {n: self._index_state(c) for n, c in sorted(self._colls.items())}}
        if self.notices:
            out["notices"] = list(self.notices)
        return out

    # -- collections ----------------------------------------------------------------------------
    def has_collection(self, name: str) -> bool:
        return name in self._colls

    def _get(self, name: str) -> _Collection:
        c = self._colls.get(name)
        if c is None or c.closed:
            raise CollectionNotFound(name)
        return c

    def ensure_collection(self, name: str, dimension: int) -> bool:
        with self._write:
            existing = self._colls.get(name)
            if existing is not None:
                if existing.meta.dimension != dimension:
                    raise DimensionMismatch(name, existing.meta.dimension, dimension)
                return False
            if not NAME.match(name):
                raise StoreError(f"invalid collection name {name!r}")
            self.space.check()  # a new shard's files are sparse and filled through mmap
            self._create(name, dimension)
            log.info("created collection %s (%d dims, edge store)", name, dimension)
            return True

    def _create(self, name: str, dimension: int) -> None:
        staging = self.root / f".creating-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        shard = qe.EdgeShard.create(str(staging / SHARD_DIR), shard_config(dimension, self.threshold, self.threads))
        # without a payload index the per-document delete scans the whole collection
        shard.update(qe.UpdateOperation.create_field_index("doc_id", qe.PayloadSchemaType.Keyword))
        shard.close()
        meta = CollectionMeta(name=name, dimension=dimension)
        meta.save(staging)
        target = self.root / name
        _remove(target)  # a stray folder without a shard (ignored at open) must not block the name
        os.rename(staging, target)  # the collection appears whole or not at all
        fsync_dir(self.root)
        self._colls[name] = _Collection(name, target, meta, qe.EdgeShard.load(str(target / SHARD_DIR)))

    def drop_collection(self, name: str) -> bool:
        with self._write:
            c = self._colls.pop(name, None)
            if c is None:
                return False
            self._stop_optimize(c)
            with c.lock.exclusive():
                c.shard.close()
                c.closed = True
            _remove(c.folder)
            return True

    def collections(self) -> list[CollectionInfo]:
        return [self.collection_info(name) for name in sorted(self._colls)]

    def collection_info(self, name: str) -> CollectionInfo:
        c = self._get(name)
        with c.lock.shared():
            points = c.shard.count(qe.CountRequest(exact=True))
            info = c.shard.info()
        return CollectionInfo(name, points, c.meta.dimension, self._index_status(c, info))

    def _index_state(self, c: _Collection) -> str:
        """current: fewer than ``threshold`` points wait for an optimize (they are searched exactly);
        optimizing: a background optimize runs; stale: it is due (or the last one failed)."""
        if c.optimizing is not None:
            return "optimizing"
        return "current" if c.meta.pending_points < self.threshold else "stale"

    def _index_status(self, c: _Collection, info: qe.ShardInfo) -> dict[str, Any]:
        state = self._index_state(c)
        return {"hnsw": state, "current": state == "current",
                "points_since_optimize": c.meta.pending_points, "threshold": self.threshold,
                "indexed_vectors": info.indexed_vectors_count, "segments": info.segments_count,
                "last_optimized_at": c.meta.last_optimized_at, "last_optimize_s": c.meta.last_optimize_s,
                "last_error": c.meta.last_optimize_error}

    # -- writes ---------------------------------------------------------------------------------
    def _write_ops(self, collection: str, ops: list[Op], points: int) -> None:
        # a write the disk cannot take is refused before it reaches the mmap'd WAL (see suite.storage)
        self.space.check(_op_bytes(ops))
        with self._write:
            c = self._get(collection)
            with c.lock.shared():
                for op in ops:
                    _apply(c.shard, op)
            if c.journal is not None:
                c.journal.extend(ops)
            c.meta.pending_points += points
            if self.auto_optimize and c.meta.pending_points >= self.threshold:
                self._start_optimize(c)

    def replace_document(self, collection: str, doc_id: str, points: list[Point]) -> int:
        """The document's new version, whole or not at all (see the module docstring)."""
        if any(p.doc_id != doc_id for p in points):
            raise StoreError(f"replace_document({doc_id!r}) was given points of another document")
        if [p.chunk_no for p in points] != list(range(len(points))):
            raise StoreError(f"replace_document({doc_id!r}): chunks must be numbered 0..n-1 in order")
        if not points:
            self._write_ops(collection, [("delete", doc_id)], 0)
            return 0
        self.space.check(_op_bytes([("upsert", points)]))  # before the intent is noted
        with self._write:
            c = self._get(collection)
            old = self.count(collection, doc_id)
            if old <= len(points):  # every old chunk id is overwritten: one operation
                self._write_ops(collection, [("upsert_whole", (list(points), None))], len(points))
                return len(points)
            rev = uuid.uuid4().hex
            intents = self._read_intents(c)
            intents[doc_id] = {"old": old, "chunks": len(points), "rev": rev}
            write_json(c.folder / INTENTS_FILE, intents)
            self._write_ops(collection, [("upsert_whole", (list(points), rev))], len(points))
            crash_point("edge.replace.upserted")
            self._write_ops(collection, [("delete_ids", [point_id(doc_id, n) for n in range(len(points), old)])], 0)
            del intents[doc_id]
            if intents:
                write_json(c.folder / INTENTS_FILE, intents)
            else:
                (c.folder / INTENTS_FILE).unlink(missing_ok=True)
        return len(points)

    def _read_intents(self, c: _Collection) -> dict[str, Any]:
        try:
            return json.loads((c.folder / INTENTS_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}

    def document(self, collection: str, doc_id: str) -> list[Hit]:
        c = self._get(collection)
        request = qe.ScrollRequest(limit=100_000, filter=_filter(doc_id=doc_id), with_payload=True,
                                   with_vector=False)
        with c.lock.shared():
            if c.closed:
                raise CollectionNotFound(collection)
            records, _ = c.shard.scroll(request)
        return sorted((hit_from_payload(r.payload or {}, 1.0) for r in records), key=lambda h: h.chunk_no)

    def delete_document(self, collection: str, doc_id: str) -> None:
        self._write_ops(collection, [("delete", doc_id)], 0)

    def upsert(self, collection: str, points: list[Point]) -> int:
        self._write_ops(collection, [("upsert", list(points))], len(points))
        return len(points)

    @contextmanager
    def writes_paused(self) -> Iterator[None]:
        """Hold every write (queries go on): a backup's snapshot and export then see one state."""
        with self._write:
            yield

    def flush(self, collection: str) -> None:
        c = self._get(collection)
        with c.lock.shared():
            c.shard.flush()

    # -- reads ----------------------------------------------------------------------------------
    def search(self, collection: str, vector: list[float], top_k: int, where: Where | None = None) -> list[Hit]:
        flt = _filter(where=where)
        c = self._get(collection)
        request = qe.QueryRequest(limit=top_k, query=qe.Query.Nearest(list(vector)), with_payload=True,
                                  filter=flt)
        with c.lock.shared():
            if c.closed:
                raise CollectionNotFound(collection)
            found = c.shard.query(request)
        return [hit_from_payload(p.payload or {}, p.score) for p in found]

    def count(self, collection: str, doc_id: str | None = None, where: Where | None = None) -> int:
        flt = _filter(doc_id, where)
        c = self._get(collection)
        with c.lock.shared():
            if c.closed:
                raise CollectionNotFound(collection)
            return c.shard.count(qe.CountRequest(exact=True, filter=flt))

    def iter_points(self, collection: str, batch: int = 256) -> Iterator[list[Point]]:
        c = self._get(collection)
        offset = None
        while True:
            request = qe.ScrollRequest(offset=offset, limit=batch, with_payload=True, with_vector=True)
            with c.lock.shared():
                if c.closed:
                    raise CollectionNotFound(collection)
                records, offset = c.shard.scroll(request)
            if records:
                yield [point_from_payload(r.payload or {}, _vector(r.vector)) for r in records]
            if offset is None:
                return

    # -- snapshots ------------------------------------------------------------------------------
    def snapshot(self, collection: str, dest: str | Path) -> dict[str, Any]:
        """Write the collection's shard as a snapshot archive at ``dest``: a (GNU, sparse) tar of the
        flushed shard folder, the layout ``EdgeShard.unpack_snapshot`` reads (as it reads a server's
        shard snapshot).

        Taken under the store's write lock (writes wait, queries go on), so it holds exactly the
        points counted here. Written to ``dest.partial`` and renamed: a half-written archive never has
        the final name.
        """
        dest = Path(dest)
        partial = dest.with_name(dest.name + ".partial")
        with self._write:
            c = self._get(collection)
            with c.lock.shared():
                c.shard.flush()
                points = c.shard.count(qe.CountRequest(exact=True))
                manifest = c.shard.snapshot_manifest()
            try:
                # GNU tar, sparse: the WAL and appendable segments pre-allocate 32 MiB files (138 MiB
                # apparent for a 3-point shard); Python's tarfile would write every zero, `tar --sparse`
                # writes 100 KB, and unpack_snapshot's reader restores the holes.
                entries = sorted(e.name for e in c.shard_path.iterdir())
                subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(partial), "-C",
                                str(c.shard_path), *entries], check=True, capture_output=True, text=True)
                with open(partial, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(partial, dest)
            except subprocess.CalledProcessError as exc:
                partial.unlink(missing_ok=True)
                raise StoreError(f"tar of collection '{collection}' failed: {exc.stderr.strip()[-300:]}") from None
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
        return {"collection": collection, "path": str(dest), "bytes": dest.stat().st_size, "points": points,
                "dimension": c.meta.dimension, "segments": len(manifest or {}), "engine": engine_version(),
                "config": c.meta.to_dict()}

    def restore_snapshot(self, collection: str, archive: str | Path) -> dict[str, Any]:
        """Replace (or create) ``collection`` from a shard snapshot archive — ours, or a Qdrant server's
        shard snapshot (``/collections/{name}/shards/0/snapshot``).

        The archive is unpacked with ``EdgeShard.unpack_snapshot`` beside the live shard and opened
        before anything is replaced; a bad archive leaves the collection as it was.
        """
        if not NAME.match(collection):
            raise StoreError(f"invalid collection name {collection!r}")
        self.space.check(2 * Path(archive).stat().st_size)
        with self._write:
            c = self._colls.get(collection)
            folder = c.folder if c is not None else self.root / f".creating-{uuid.uuid4().hex[:12]}"
            folder.mkdir(exist_ok=True)
            incoming = folder / f"shard.incoming-{uuid.uuid4().hex[:12]}"
            try:
                qe.EdgeShard.unpack_snapshot(str(archive), str(incoming))
                probe = qe.EdgeShard.load(str(incoming))  # refuses what it cannot read
                points = probe.count(qe.CountRequest(exact=True))
                probe.close()
                dimension = json.loads((incoming / "edge_config.json").read_text())["vectors"][""]["size"]
            except Exception as exc:
                shutil.rmtree(incoming, ignore_errors=True)
                if c is None:
                    shutil.rmtree(folder, ignore_errors=True)
                raise StoreError(f"snapshot {archive} does not restore: {exc}") from None
            if c is None:
                os.rename(incoming, folder / SHARD_DIR)
                meta = CollectionMeta(name=collection, dimension=int(dimension))
                meta.save(folder)
                target = self.root / collection
                _remove(target)
                os.rename(folder, target)
                fsync_dir(self.root)
                c = _Collection(collection, target, meta, qe.EdgeShard.load(str(target / SHARD_DIR)))
                self._colls[collection] = c
            else:
                if int(dimension) != c.meta.dimension:
                    shutil.rmtree(incoming, ignore_errors=True)
                    raise DimensionMismatch(collection, c.meta.dimension, int(dimension))
                c.generation += 1  # a copy being optimized now describes the old data
                self._stop_optimize(c)
                self._swap_in(c, incoming, [])
            with c.lock.shared():
                info = c.shard.info()
            c.meta.pending_points = max(0, info.points_count - info.indexed_vectors_count)
            c.meta.save(c.folder)
        return {"collection": collection, "points": points, "dimension": int(dimension)}

    # -- index maintenance ----------------------------------------------------------------------
    def optimize(self, collection: str, wait: bool = True, timeout_s: float = OPTIMIZE_TIMEOUT_S) -> dict[str, Any]:
        """Start a background optimize now, whatever the threshold; with ``wait``, return once it is done."""
        with self._write:
            c = self._get(collection)
            job = c.optimizing or self._start_optimize(c)
        if wait and job.thread is not None:
            job.thread.join(timeout_s)
        return self.collection_info(collection).index or {}

    def wait_optimized(self, timeout_s: float = OPTIMIZE_TIMEOUT_S) -> None:
        """Block until no background optimize runs (tests, benchmarks, backups that want a quiet store)."""
        deadline = time.monotonic() + timeout_s
        for c in list(self._colls.values()):
            job = c.optimizing
            if job is not None and job.thread is not None:
                job.thread.join(max(0.0, deadline - time.monotonic()))

    def _start_optimize(self, c: _Collection) -> _Optimize:
        """Called under ``self._write``."""
        if c.optimizing is not None:
            return c.optimizing
        job = _Optimize()
        if self._closing:
            return job  # no thread: nothing to wait for
        c.optimizing = job
        job.thread = threading.Thread(target=self._optimize_job, args=(c, job), daemon=True,
                                      name=f"edge-optimize-{c.name}")
        job.thread.start()
        return job

    def _stop_optimize(self, c: _Collection) -> None:
        job = c.optimizing
        if job is not None and job.proc is not None and job.proc.poll() is None:
            job.proc.kill()

    def _optimize_job(self, c: _Collection, job: _Optimize) -> None:
        copy = c.folder / f"shard.optimizing-{uuid.uuid4().hex[:12]}"
        try:
            with self._write:  # writes wait for flush + copy; queries go on
                if c.closed or self._closing:
                    return
                self.space.check(2 * tree_bytes(c.shard_path))  # the copy, and the optimizer's new segments
                with c.lock.shared():
                    c.shard.flush()
                shutil.copytree(c.shard_path, copy)
                c.journal, generation, pending_at_copy = [], c.generation, c.meta.pending_points
            result = self._run_optimizer(copy, c.meta.dimension, job)
            with self._write:
                if c.closed or self._closing or c.generation != generation:
                    return  # dropped, closed or restored meanwhile: this copy is stale
                journal, c.journal = c.journal or [], None
                self._swap_in(c, copy, journal)
                c.meta.pending_points = max(0, c.meta.pending_points - pending_at_copy)
                c.meta.last_optimized_at = now_iso()
                c.meta.last_optimize_s = round(time.monotonic() - job.started, 3)
                c.meta.last_optimize_error = None
                c.meta.save(c.folder)
            log.info("optimized collection %s in %.1fs (%s; %d writes replayed)", c.name,
                     c.meta.last_optimize_s, result, len(journal))
        except Exception as exc:  # the live shard is untouched: report, keep serving
            if self._closing or c.closed:
                log.info("optimize of collection %s stopped: the store is closing", c.name)
            else:
                log.exception("optimizing collection %s failed", c.name)
                c.meta.last_optimize_error = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            with self._write:
                c.journal = None
                c.optimizing = None
            shutil.rmtree(copy, ignore_errors=True)

    def _run_optimizer(self, copy: Path, dimension: int, job: _Optimize) -> dict[str, Any]:
        cmd = [sys.executable, "-m", "suite.vectorstore.edge_optimize", str(copy), str(dimension),
               str(self.threshold), str(self.threads)]
        env = dict(os.environ, SUITE_OPTIMIZE_PARENT=str(os.getpid()))
        job.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            out, err = job.proc.communicate(timeout=OPTIMIZE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            job.proc.kill()
            job.proc.communicate()
            raise StoreError(f"optimize of {copy} took longer than {OPTIMIZE_TIMEOUT_S:.0f}s") from None
        if job.proc.returncode != 0:
            raise StoreError(f"optimizer exited {job.proc.returncode}: {err.strip()[-500:]}")
        return json.loads(out.strip().splitlines()[-1])

    def _swap_in(self, c: _Collection, incoming: Path, replay: list[Op]) -> None:
        """Replace the live shard by ``incoming`` (a shard folder), then apply ``replay`` to it.

        Under ``self._write``. If anything fails, the old shard is put back and the error raised.
        """
        live, old = c.shard_path, c.folder / "shard.old"
        with c.lock.exclusive():
            c.shard.close()
            os.rename(live, old)
            crash_point("edge.swap.live_moved")
            os.rename(incoming, live)
            fsync_dir(c.folder)
            crash_point("edge.swap.incoming_in")
            shard = None
            try:
                shard = qe.EdgeShard.load(str(live))
                for op in replay:
                    _apply(shard, op)
                shard.flush()
                crash_point("edge.swap.replayed")
            except Exception:
                if shard is not None:
                    shard.close()
                _remove(live)
                os.rename(old, live)
                fsync_dir(c.folder)
                c.shard = qe.EdgeShard.load(str(live))
                raise
            c.shard = shard
        _remove(old)

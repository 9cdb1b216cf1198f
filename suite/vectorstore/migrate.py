"""Copy a qdrant-client local-mode store into the edge store, on request (``suite rag migrate``).

Never silent and never destructive: the local store is read, not changed (a marker file records the
migration, so start-up stops warning about it); a collection already in the edge store is skipped
unless ``replace`` is given. Each copied collection is checked twice: its point count, and its ranking —
stored vectors used as queries must return the same documents in the same order from both stores
(ties in score may swap places; a real difference fails the migration).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from suite.fsio import write_json
from suite.vectorstore.base import Hit, StoreUnavailable
from suite.vectorstore.edge import EdgeStore
from suite.vectorstore.edge_config import now_iso
from suite.vectorstore.qdrant import EmbeddedQdrantStore
from suite.vectorstore.select import MIGRATED_MARKER, find_local_store

log = logging.getLogger(__name__)

SCORE_TIE = 1e-5


@dataclass
class CollectionMigration:
    name: str
    status: str  # copied | replaced | skipped | failed
    source_points: int = 0
    target_points: int = 0
    seconds: float = 0.0
    queries: int = 0
    same_ranking: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "skipped" or (self.status in ("copied", "replaced")
                                            and self.source_points == self.target_points
                                            and self.same_ranking == self.queries)


@dataclass
class MigrationReport:
    source: str
    target: str
    collections: list[CollectionMigration] = field(default_factory=list)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.collections)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "ok": self.ok, "detail": self.detail,
                "collections": [{**asdict(c), "ok": c.ok} for c in self.collections]}


def same_ranking(a: list[Hit], b: list[Hit]) -> bool:
    """Equal document order, where a place may differ only between hits of (nearly) equal score."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if (x.doc_id, x.chunk_no) != (y.doc_id, y.chunk_no) and abs(x.score - y.score) > SCORE_TIE:
            return False
    return True


def migrate_local_to_edge(local_path: Path, edge_path: Path, *, optimize_threshold: int = 5000,
                          optimize_threads: int = 1, replace: bool = False, sample: int = 32, top_k: int = 5,
                          progress: Callable[[str], None] = log.info) -> MigrationReport:
    """Copy every collection of the local store at ``local_path`` into the edge store at ``edge_path``.

    Raises ``StoreUnavailable`` when either store is held by a running service.
    """
    report = MigrationReport(str(local_path), str(edge_path))
    found = find_local_store(local_path)
    if found is None:
        report.detail = f"no qdrant-client local store with collections at {local_path}: nothing to migrate"
        return report
    try:
        source = EmbeddedQdrantStore(local_path)
    except StoreUnavailable as exc:
        raise StoreUnavailable(f"{exc} — is the rag service running with rag.store=local? stop it first "
                               f"(`suite down rag`)") from None
    try:
        target = EdgeStore(edge_path, optimize_threshold=optimize_threshold, optimize_threads=optimize_threads,
                           auto_optimize=False)
    except StoreUnavailable:
        source.close()
        raise
    try:
        for name in sorted(found.collections):
            report.collections.append(_migrate_one(source, target, name, replace, sample, top_k, progress))
    finally:
        target.close()
        source.close()
    if report.ok and any(c.status != "skipped" for c in report.collections):
        write_json(local_path / MIGRATED_MARKER, {
            "at": now_iso(), "to": str(edge_path),
            "collections": {c.name: c.target_points for c in report.collections}})
    return report


def _migrate_one(source: EmbeddedQdrantStore, target: EdgeStore, name: str, replace: bool, sample: int,
                 top_k: int, progress: Callable[[str], None]) -> CollectionMigration:
    t0 = time.monotonic()
    result = CollectionMigration(name, "copied", source_points=source.count(name))
    dimension = source.dimension(name)
    if dimension is None:
        result.status, result.detail = "failed", "named vectors are not supported (one unnamed vector expected)"
        return result
    if target.has_collection(name):
        existing = target.count(name)
        if existing and not replace:
            result.status, result.target_points = "skipped", existing
            result.detail = f"already in the edge store with {existing} points (--replace overwrites it)"
            progress(f"{name}: skipped, {result.detail}")
            return result
        target.drop_collection(name)
        result.status = "replaced"
    target.ensure_collection(name, dimension)
    copied = 0
    for batch in source.iter_points(name, batch=512):
        copied += target.upsert(name, batch)
        progress(f"{name}: {copied}/{result.source_points} points copied")
    target.flush(name)
    if copied >= target.threshold:
        progress(f"{name}: building the HNSW index (optimize)")
        target.optimize(name, wait=True)
    result.target_points = target.count(name)
    for batch in source.iter_points(name, batch=sample):
        for point in batch:
            result.queries += 1
            if same_ranking(source.search(name, point.vector, top_k), target.search(name, point.vector, top_k)):
                result.same_ranking += 1
        break  # one batch of stored vectors is the sample
    result.seconds = round(time.monotonic() - t0, 2)
    if result.source_points != result.target_points:
        result.detail = f"point counts differ: {result.source_points} local, {result.target_points} edge"
    elif result.same_ranking != result.queries:
        result.detail = f"{result.queries - result.same_ranking} of {result.queries} sample queries rank differently"
    progress(f"{name}: {result.status}, {result.target_points} points, {result.same_ranking}/{result.queries} "
             f"sample queries rank the same ({result.seconds}s)")
    return result

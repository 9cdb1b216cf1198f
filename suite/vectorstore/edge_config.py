"""The edge store's two configs: the engine's ``EdgeConfig`` of a shard, and our ``collection.json`` beside it.

``collection.json`` is what the project knows about a collection that the shard does not say (or says
only in its own beta format): name, dimension, distance, the engine version that made it, and the index
bookkeeping behind "is the HNSW index current". It is small, rewritten atomically, and can be rebuilt
from the shard's own ``edge_config.json`` if it is ever lost.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import qdrant_edge

from suite.fsio import write_json

META_FILE = "collection.json"
SHARD_DIR = "shard"
FORMAT = 1

# HNSW build parameters: Qdrant's own defaults (m=16, ef_construct=100); fixed, because a change would
# make the next optimize rebuild every segment's graph.
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
FULL_SCAN_THRESHOLD_KB = 10_000


def engine_version() -> str:
    try:
        return f"qdrant-edge-py {metadata.version('qdrant-edge-py')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - the package is a dependency
        return "qdrant-edge-py (unknown version)"


def indexing_threshold_kb(points: int, dimension: int) -> int:
    """The engine counts its indexing threshold in KB of vectors; ours is in points: the largest whole KB
    below the size of ``points`` vectors, so a segment of exactly ``points`` is indexed (rounded up, an
    optimize started at the threshold built no graph at all and still called the index current)."""
    return max(1, (points * dimension * 4 - 1) // 1024)


def shard_config(dimension: int, threshold_points: int, threads: int) -> qdrant_edge.EdgeConfig:
    """Cosine vectors of ``dimension``; segments above ``threshold_points`` get an HNSW index."""
    return qdrant_edge.EdgeConfig(
        vectors=qdrant_edge.EdgeVectorParams(size=dimension, distance=qdrant_edge.Distance.Cosine),
        hnsw_config=qdrant_edge.HnswIndexConfig(m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT,
                                                full_scan_threshold=FULL_SCAN_THRESHOLD_KB,
                                                max_indexing_threads=threads),
        optimizers=qdrant_edge.EdgeOptimizersConfig(
            indexing_threshold=indexing_threshold_kb(threshold_points, dimension)),
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class CollectionMeta:
    """``collection.json``: the collection config kept beside its shard."""

    name: str
    dimension: int
    distance: str = "Cosine"
    created_at: str = field(default_factory=now_iso)
    engine: str = field(default_factory=engine_version)
    format: int = FORMAT
    # index bookkeeping: points written since the last optimize (persisted on close and after each
    # optimize; after a crash it is re-estimated from the shard's own counts)
    pending_points: int = 0
    last_optimized_at: str | None = None
    last_optimize_s: float | None = None
    last_optimize_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: Path) -> None:
        """Write ``collection.json`` crash-safe (``suite.fsio``: temp file, fsync, rename)."""
        write_json(folder / META_FILE, self.to_dict())

    @classmethod
    def load(cls, folder: Path) -> CollectionMeta:
        data = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def rebuild(cls, folder: Path) -> CollectionMeta:
        """From the shard's own ``edge_config.json``, when ``collection.json`` is missing or unreadable."""
        config = json.loads((folder / SHARD_DIR / "edge_config.json").read_text(encoding="utf-8"))
        vector = config["vectors"][""]
        return cls(name=folder.name, dimension=int(vector["size"]), distance=str(vector["distance"]),
                   created_at="unknown (rebuilt from the shard)")



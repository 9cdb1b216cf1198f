"""The vector-store contract: collections of chunk points, replaced per document, searched by cosine.

Three implementations keep it (``suite.vectorstore.open_store`` picks one from settings): ``edge``
(Qdrant Edge, the embedded default), ``local`` (qdrant-client local mode, the fallback) and ``server``
(a Qdrant server by URL). They store the same payload under the same point ids, so one store's points
copy into another unchanged (``suite rag migrate``, the portable export of a backup).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

# Fixed namespace: the same (document id, chunk number) gives the same point id in every store.
_NAMESPACE = uuid.UUID("8f0d3c52-6a4e-4a7c-9d55-3f1f2b0c9e11")


def point_id(doc_id: str, chunk_no: int) -> str:
    """Deterministic point id of a document's chunk (a UUID, as Qdrant wants)."""
    return str(uuid.uuid5(_NAMESPACE, f"{doc_id}\x1f{chunk_no}"))


@dataclass
class Point:
    """One chunk: its vector and the payload every store keeps the same way."""

    doc_id: str
    chunk_no: int
    text: str
    vector: list[float]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return point_id(self.doc_id, self.chunk_no)

    def payload(self) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "chunk_no": self.chunk_no, "text": self.text,
                "metadata": self.metadata}


@dataclass
class Hit:
    doc_id: str
    chunk_no: int
    text: str
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "chunk_no": self.chunk_no, "text": self.text,
                "score": round(self.score, 6), "metadata": self.metadata}


@dataclass
class CollectionInfo:
    name: str
    points: int
    dimension: int | None
    index: dict[str, Any] | None = None  # edge only: whether the HNSW index is current (see EdgeStore)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "points": self.points, "dimension": self.dimension}
        if self.index is not None:
            out["index"] = self.index
        return out


class StoreError(Exception):
    """Root of the vector store's errors."""


class CollectionNotFound(StoreError):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection '{name}' does not exist")
        self.name = name


class DimensionMismatch(StoreError):
    def __init__(self, name: str, existing: int | None, wanted: int) -> None:
        super().__init__(f"collection '{name}' holds {existing}-dim vectors, not {wanted}-dim; "
                         f"index into a new collection (or drop this one) after changing the model")
        self.name, self.existing, self.wanted = name, existing, wanted


class StoreUnavailable(StoreError):
    """The store cannot be reached (server down) or opened (path held by another process)."""


class InvalidFilter(StoreError):
    """A metadata filter no store can evaluate (the client's mistake: 400, not 502)."""


# A metadata filter: every key must match; a list value matches any of its values.
Where = dict[str, Any]
_WHERE_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def check_where(where: Where | None) -> list[tuple[str, Any]]:
    """The filter as (payload path, value) pairs, or ``InvalidFilter`` for keys or values no store takes."""
    if not where:
        return []
    pairs = []
    for key, value in where.items():
        if not isinstance(key, str) or not _WHERE_KEY.match(key):
            raise InvalidFilter(f"metadata filter key {key!r}: use 1-64 letters, digits, '_' or '-'")
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str | int) and not isinstance(v, float) for v in values):
            raise InvalidFilter(f"metadata filter '{key}': give a string, integer, boolean or a "
                                f"non-empty list of strings or integers")
        if isinstance(value, list) and len({type(v) for v in values}) > 1:
            raise InvalidFilter(f"metadata filter '{key}': a list must hold one type")
        pairs.append((f"metadata.{key}", value))
    return pairs


def hit_from_payload(payload: dict[str, Any], score: float) -> Hit:
    """The ``Hit`` a stored payload and its score describe."""
    return Hit(doc_id=str(payload.get("doc_id", "")), chunk_no=int(payload.get("chunk_no", 0)),
               text=str(payload.get("text", "")), score=float(score), metadata=payload.get("metadata") or {})


def point_from_payload(payload: dict[str, Any], vector: list[float]) -> Point:
    """The ``Point`` a stored payload and vector describe (the inverse of ``Point.payload``)."""
    return Point(doc_id=str(payload.get("doc_id", "")), chunk_no=int(payload.get("chunk_no", 0)),
                 text=str(payload.get("text", "")), vector=[float(x) for x in vector],
                 metadata=payload.get("metadata") or {})


class VectorStore(Protocol):
    kind: str  # "edge" | "local" | "server"
    location: str

    def ensure_collection(self, name: str, dimension: int) -> bool:
        """Create the collection if missing (True when created); refuse another dimension."""

    def has_collection(self, name: str) -> bool: ...

    def collections(self) -> list[CollectionInfo]: ...

    def replace_document(self, collection: str, doc_id: str, points: list[Point]) -> int:
        """Make these points the document's (its old version's go); returns the points written. A
        crash leaves the old version or the new one, never a mix (edge: always; server and local: up
        to the old chunks past a shrunk new version's end)."""

    def document(self, collection: str, doc_id: str) -> list[Hit]:
        """The document's chunks, by chunk number (score 1.0): what a reader of it gets back."""

    def delete_document(self, collection: str, doc_id: str) -> None: ...

    def upsert(self, collection: str, points: list[Point]) -> int:
        """Write points as they are (same ids overwrite); returns the points written."""

    def search(self, collection: str, vector: list[float], top_k: int, where: Where | None = None) -> list[Hit]:
        """Best first, cosine score; ``where`` keeps only points whose metadata match."""

    def count(self, collection: str, doc_id: str | None = None, where: Where | None = None) -> int: ...

    def iter_points(self, collection: str, batch: int = 256) -> Iterator[list[Point]]:
        """Every point with its vector, in batches (export, migration)."""

    def describe(self) -> dict[str, Any]:
        """Kind, location and anything an operator should know (shown by the service's /health)."""

    def writes_paused(self) -> AbstractContextManager[Any]:
        """Hold this process's writes to the store (a backup's snapshot and export see one state)."""

    def flush(self, collection: str) -> None:
        """Make the collection's acknowledged writes survive a power cut (a server does it itself)."""

    def drop_collection(self, name: str) -> bool: ...

    def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot answer."""

    def close(self) -> None: ...

"""The vector-store contract: collections of chunk points, replaced per document, searched by cosine."""

from __future__ import annotations

import uuid
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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "points": self.points, "dimension": self.dimension}


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


class VectorStore(Protocol):
    kind: str  # "embedded" | "server"
    location: str

    def ensure_collection(self, name: str, dimension: int) -> bool:
        """Create the collection if missing (True when created); refuse another dimension."""

    def has_collection(self, name: str) -> bool: ...

    def collections(self) -> list[CollectionInfo]: ...

    def replace_document(self, collection: str, doc_id: str, points: list[Point]) -> int:
        """Delete the document's old points, then upsert these; returns the points written."""

    def delete_document(self, collection: str, doc_id: str) -> None: ...

    def search(self, collection: str, vector: list[float], top_k: int) -> list[Hit]: ...

    def count(self, collection: str, doc_id: str | None = None) -> int: ...

    def drop_collection(self, name: str) -> bool: ...

    def ping(self) -> None:
        """Raise StoreUnavailable when the store cannot answer."""

    def close(self) -> None: ...

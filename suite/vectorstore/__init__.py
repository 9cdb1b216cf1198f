"""A small vector-store interface with two Qdrant implementations: embedded (local path) and server (URL)."""

from suite.vectorstore.base import (
    CollectionInfo,
    CollectionNotFound,
    DimensionMismatch,
    Hit,
    Point,
    StoreError,
    StoreUnavailable,
    VectorStore,
    point_id,
)
from suite.vectorstore.qdrant import EmbeddedQdrantStore, ServerQdrantStore, open_store

__all__ = [
    "CollectionInfo", "CollectionNotFound", "DimensionMismatch", "Hit", "Point", "StoreError",
    "StoreUnavailable", "VectorStore", "point_id", "EmbeddedQdrantStore", "ServerQdrantStore", "open_store",
]

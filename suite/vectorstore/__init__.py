"""The vector-store interface and its three Qdrant implementations: edge (the embedded default),
local (qdrant-client local mode, the fallback) and server (a Qdrant server by URL)."""

from suite.vectorstore.base import (
    CollectionInfo,
    CollectionNotFound,
    DimensionMismatch,
    Hit,
    InvalidFilter,
    Point,
    StoreError,
    StoreUnavailable,
    VectorStore,
    point_id,
)
from suite.vectorstore.edge import EdgeStore
from suite.vectorstore.qdrant import EmbeddedQdrantStore, LocalQdrantStore, ServerQdrantStore
from suite.vectorstore.select import open_store

__all__ = [
    "CollectionInfo", "CollectionNotFound", "DimensionMismatch", "Hit", "InvalidFilter", "Point", "StoreError",
    "StoreUnavailable", "VectorStore", "point_id", "EdgeStore", "EmbeddedQdrantStore", "LocalQdrantStore",
    "ServerQdrantStore", "open_store",
]

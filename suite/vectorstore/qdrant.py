"""Two qdrant-client implementations of ``VectorStore``: ``local`` and ``server``.

* ``EmbeddedQdrantStore`` (kind ``local``): qdrant-client local mode on a path (or ``:memory:``) —
  points pickled into SQLite, brute-force numpy search, every point loaded at open. The fallback
  embedded store (``rag.store = "local"``); ``suite rag migrate`` copies it into the edge store.
  One process may open a path at a time (the RAG service owns it); calls are serialised with a lock.
* ``ServerQdrantStore``: a Qdrant server by URL; network failures become ``StoreUnavailable``.

Both keep the same collection names and payloads as the edge store (``suite.vectorstore.edge``), so an
index built in one reads the same in the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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

log = logging.getLogger(__name__)

T = TypeVar("T")
UPSERT_BATCH = 256


def _condition(key: str, value: Any) -> models.FieldCondition:
    match = models.MatchAny(any=value) if isinstance(value, list) else models.MatchValue(value=value)
    return models.FieldCondition(key=key, match=match)


def _filter(doc_id: str | None = None, where: Where | None = None) -> models.Filter | None:
    conditions = [_condition(key, value) for key, value in check_where(where)]
    if doc_id is not None:
        conditions.append(_condition("doc_id", doc_id))
    return models.Filter(must=conditions) if conditions else None


class QdrantStore:
    """What both modes share; subclasses decide how the client is made and how calls are guarded."""

    kind = "qdrant"

    def __init__(self, client: QdrantClient, location: str) -> None:
        self.client = client
        self.location = location

    def _call(self, fn: Callable[[], T]) -> T:
        return fn()

    def _on_created(self, name: str) -> None:
        """Hook after a collection is created (the server indexes ``doc_id``)."""

    # -- contract -------------------------------------------------------------------------------
    def ping(self) -> None:
        self._call(lambda: self.client.get_collections())

    def has_collection(self, name: str) -> bool:
        return self._call(lambda: self.client.collection_exists(name))

    def dimension(self, name: str) -> int | None:
        info = self._call(lambda: self.client.get_collection(name))
        vectors = info.config.params.vectors
        return getattr(vectors, "size", None)

    def ensure_collection(self, name: str, dimension: int) -> bool:
        if self.has_collection(name):
            existing = self.dimension(name)
            if existing is not None and existing != dimension:
                raise DimensionMismatch(name, existing, dimension)
            return False
        self._call(lambda: self.client.create_collection(
            name, vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE)))
        self._on_created(name)
        log.info("created collection %s (%d dims, %s store)", name, dimension, self.kind)
        return True

    def collections(self) -> list[CollectionInfo]:
        names = sorted(c.name for c in self._call(lambda: self.client.get_collections()).collections)
        return [CollectionInfo(n, self.count(n), self.dimension(n)) for n in names]

    def delete_document(self, collection: str, doc_id: str) -> None:
        self._require(collection)
        self._call(lambda: self.client.delete(
            collection, points_selector=models.FilterSelector(filter=_filter(doc_id)), wait=True))

    def replace_document(self, collection: str, doc_id: str, points: list[Point]) -> int:
        """One upsert request for the whole document (Qdrant applies a request as one operation, so
        a crash leaves the old version or the new one), then the old version's chunks past the new
        one's end. Only that second step, after a shrink, can be cut off; the edge store journals it."""
        if any(p.doc_id != doc_id for p in points):
            raise StoreError(f"replace_document({doc_id!r}) was given points of another document")
        old = self.count(collection, doc_id)
        if not points:
            self.delete_document(collection, doc_id)
            return 0
        structs = [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload()) for p in points]
        self._call(lambda: self.client.upsert(collection, points=structs, wait=True))
        if old > len(points):
            tail = [point_id(doc_id, n) for n in range(len(points), old)]
            self._call(lambda: self.client.delete(collection, points_selector=models.PointIdsList(points=tail),
                                                  wait=True))
        return len(points)

    def document(self, collection: str, doc_id: str) -> list[Hit]:
        self._require(collection)
        out, offset = [], None
        while True:
            records, offset = self._call(lambda o=offset: self.client.scroll(
                collection, scroll_filter=_filter(doc_id), limit=256, offset=o, with_payload=True,
                with_vectors=False))
            out += [hit_from_payload(r.payload or {}, 1.0) for r in records]
            if offset is None:
                return sorted(out, key=lambda h: h.chunk_no)

    def upsert(self, collection: str, points: list[Point]) -> int:
        self._require(collection)
        for start in range(0, len(points), UPSERT_BATCH):
            batch = points[start:start + UPSERT_BATCH]
            structs = [models.PointStruct(id=p.id, vector=p.vector, payload=p.payload()) for p in batch]
            self._call(lambda s=structs: self.client.upsert(collection, points=s, wait=True))
        return len(points)

    def search(self, collection: str, vector: list[float], top_k: int, where: Where | None = None) -> list[Hit]:
        flt = _filter(where=where)
        self._require(collection)
        response = self._call(lambda: self.client.query_points(
            collection, query=vector, limit=top_k, with_payload=True, query_filter=flt))
        return [hit_from_payload(p.payload or {}, p.score) for p in response.points]

    def count(self, collection: str, doc_id: str | None = None, where: Where | None = None) -> int:
        flt = _filter(doc_id, where)
        self._require(collection)
        return self._call(lambda: self.client.count(collection, count_filter=flt, exact=True)).count

    def iter_points(self, collection: str, batch: int = 256) -> Iterator[list[Point]]:
        self._require(collection)
        offset = None
        while True:
            records, offset = self._call(lambda o=offset: self.client.scroll(
                collection, limit=batch, offset=o, with_payload=True, with_vectors=True))
            if records:
                yield [point_from_payload(r.payload or {}, r.vector) for r in records]
            if offset is None:
                return

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location, "state": "open"}

    def flush(self, collection: str) -> None:
        """A server (and local mode's SQLite) persists each acknowledged write itself."""

    def writes_paused(self) -> AbstractContextManager[Any]:
        """A server orders its own writes; the caller (the RAG service's write lock) keeps ours out."""
        return nullcontext()

    def drop_collection(self, name: str) -> bool:
        return bool(self._call(lambda: self.client.delete_collection(name)))

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing is best effort: the process is usually ending
            log.debug("closing the qdrant client failed", exc_info=True)

    def _require(self, collection: str) -> None:
        if not self.has_collection(collection):
            raise CollectionNotFound(collection)



class EmbeddedQdrantStore(QdrantStore):
    """qdrant-client local mode: the data lives under ``path`` (``":memory:"`` for a throwaway store)."""

    kind = "local"

    def __init__(self, path: str | Path) -> None:
        location = str(path)
        try:
            if location == ":memory:":
                client = QdrantClient(location=":memory:")
            else:
                Path(location).mkdir(parents=True, exist_ok=True)
                # Every call holds self._lock, so the SQLite connection is never used by two threads at once.
                client = QdrantClient(path=location, force_disable_check_same_thread=True)
        except RuntimeError as exc:  # "already accessed by another instance of Qdrant client"
            raise StoreUnavailable(f"cannot open the embedded Qdrant store at {location}: {exc}") from None
        super().__init__(client, location)
        self._lock = threading.RLock()

    def _call(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    def writes_paused(self) -> AbstractContextManager[Any]:
        return self._lock  # every call takes it (reentrant): held, nothing else reaches the store


class ServerQdrantStore(QdrantStore):
    """A Qdrant server by URL. Unreachable or failing (5xx) means ``StoreUnavailable``."""

    kind = "server"

    def __init__(self, url: str, timeout_s: int = 10, api_key: str | None = None) -> None:
        # No version check at construction: it is a network call that only warns; ping() reports instead.
        super().__init__(QdrantClient(url=url, timeout=timeout_s, api_key=api_key, check_compatibility=False),
                         url)
        self.api_key = api_key

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except ResponseHandlingException as exc:
            raise StoreUnavailable(f"Qdrant server at {self.location} unreachable: {exc}") from None
        except UnexpectedResponse as exc:
            if exc.status_code is not None and exc.status_code >= 500:
                raise StoreUnavailable(f"Qdrant server at {self.location} failed: HTTP {exc.status_code}") \
                    from None
            raise StoreError(f"Qdrant server refused the request: HTTP {exc.status_code} "
                             f"{exc.content[:200]!r}") from None

    def _on_created(self, name: str) -> None:
        # Without a payload index, the per-document delete scans the whole collection.
        self._call(lambda: self.client.create_payload_index(
            name, field_name="doc_id", field_schema=models.PayloadSchemaType.KEYWORD, wait=True))


LocalQdrantStore = EmbeddedQdrantStore

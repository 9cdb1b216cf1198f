"""The RAG service's logic: the indexing pipeline, retrieval + answer, collections, probes.

Index: documents (or files of an allowed folder) -> chunks -> vectors from the embedding service ->
the vector store, replacing each document's old points (point ids derive from document id and chunk
number, so re-indexing never duplicates). Query: embed, retrieve top-k, answer through the gateway
with the retrieved context, return the answer and its sources.

Store calls block (qdrant-client), so they run in worker threads.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from suite import tls
from suite.aiotasks import cancel_and_wait
from suite.rag.chunking import chunk_text
from suite.rag.deps import Dependencies, DependencyError
from suite.rag.files import FolderError, documents_from_folder, resolve_folder
from suite.rag.schemas import Document, IndexRequest, QueryRequest
from suite.settings import Settings
from suite.vectorstore import CollectionNotFound, Point, VectorStore, open_store
from suite.web import ApiError


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


async def _store_call(fn, *args):
    return await asyncio.to_thread(fn, *args)


class RagService:
    """The vector store (owned here), the HTTP dependencies and a write lock; ``app.state.rag``."""

    def __init__(self, settings: Settings, store: VectorStore, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self.cfg = settings.rag
        self.store = store
        self.http = http
        self.deps = Dependencies(settings, http)
        self.write_lock = asyncio.Lock()  # two re-indexes of one document must not interleave
        self._watcher: asyncio.Task | None = None

    @classmethod
    async def open(cls, settings: Settings) -> RagService:
        store = await asyncio.to_thread(open_store, settings)
        service = cls(settings, store, httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=2.0),
                                                             verify=tls.client_context(settings)))
        service._watcher = asyncio.get_running_loop().create_task(service.deps.watch(),
                                                                  name="rag-dependency-watch")
        return service

    async def close(self) -> None:
        await cancel_and_wait(self._watcher)
        await self.http.aclose()
        await asyncio.to_thread(self.store.close)

    # -- probes ---------------------------------------------------------------------------------
    def health_info(self) -> dict[str, Any]:
        deps = {k: v.to_dict() for k, v in self.deps.state.items()}
        # /health is open: no filesystem paths (a local location is "local"; notices say <data_dir>)
        store = dict(self.store.describe())
        if not str(store.get("location", "")).startswith("http"):
            store["location"] = "local"
        data_dir = str(self.settings.data_dir)
        if isinstance(store.get("notices"), list):
            store["notices"] = [str(n).replace(data_dir, "<data_dir>") for n in store["notices"]]
        deps["vector_store"] = store
        return {"dependencies": deps, "degraded": any(d.get("state") == "down" for d in deps.values())}

    async def ready(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        await _store_call(self.store.ping)
        store_ms = _ms(t0)
        t1 = time.perf_counter()
        # the embedding service's /ready embeds one string; calling it needs no key (no probe holds one)
        emb = await self.deps.embedding_ready(self.settings.rag.embedding_timeout_s)
        return {"store": self.store.kind, "store_ms": store_ms, "embedding_ms": _ms(t1),
                "dimension": emb.get("dimension"), "indexes": self.store.describe().get("indexes")}

    # -- indexing -------------------------------------------------------------------------------
    async def documents(self, body: IndexRequest) -> list[Document]:
        """The request's documents plus those of its folder; ids unique within the request."""
        docs = list(body.documents)
        if body.folder:
            try:
                folder = resolve_folder(body.folder, self.cfg.allowed_dirs)
                docs.extend(await asyncio.to_thread(documents_from_folder, folder))
            except FolderError as exc:
                raise ApiError(exc.status, str(exc), code="bad_folder") from None
        if not docs:
            raise ApiError(400, "nothing to index: give 'documents' (id, text, metadata) or a 'folder'",
                           code="no_documents")
        seen: set[str] = set()
        for doc in docs:
            if doc.id in seen:
                raise ApiError(400, f"document id '{doc.id}' appears twice in one request", code="duplicate_id")
            seen.add(doc.id)
        return docs

    async def index(self, body: IndexRequest) -> dict[str, Any]:
        """documents -> chunks -> vectors -> the collection, each document's old points replaced."""
        t0 = time.perf_counter()
        space = getattr(self.store, "space", None)  # the edge store's; a server minds its own disk
        if space is not None:  # refuse a write the disk cannot take before embedding anything
            await asyncio.to_thread(space.check)
        docs = await self.documents(body)
        chunked = await asyncio.to_thread(self._chunk, docs)  # megabytes of text: not on the event loop
        texts = [c for _, chunks in chunked for c in chunks]
        t_embed = time.perf_counter()
        emb = await self.deps.embed(texts)
        embed_ms = _ms(t_embed)
        if len(emb.vectors) != len(texts):
            raise DependencyError("embedding", 200, f"{len(emb.vectors)} vectors for {len(texts)} chunks")
        t_store = time.perf_counter()
        async with self.write_lock:
            created = await _store_call(self.store.ensure_collection, body.collection, emb.dimension)
            per_doc, offset = [], 0
            for doc, chunks in chunked:
                points = [Point(doc.id, n, text, emb.vectors[offset + n], doc.metadata)
                          for n, text in enumerate(chunks)]
                offset += len(chunks)
                await _store_call(self.store.replace_document, body.collection, doc.id, points)
                per_doc.append({"id": doc.id, "chunks": len(chunks)})
            # acknowledged = on disk: the WAL already survives a crashed process; the flush makes
            # this request's documents survive a power cut too (one per request, 15-120 ms here)
            await _store_call(self.store.flush, body.collection)
            total = await _store_call(self.store.count, body.collection)
        return {"collection": body.collection, "created": created, "documents": len(docs),
                "chunks": len(texts), "points_in_collection": total, "per_document": per_doc,
                "embedding_model": emb.model, "dimension": emb.dimension,
                "timings_ms": {"embed": embed_ms, "store": _ms(t_store), "total": _ms(t0)}}

    def _chunk(self, docs: list[Document]) -> list[tuple[Document, list[str]]]:
        return [(doc, chunk_text(doc.text, self.cfg.chunk_chars, self.cfg.chunk_overlap)) for doc in docs]

    # -- querying -------------------------------------------------------------------------------
    async def query(self, body: QueryRequest) -> dict[str, Any]:
        """Retrieve the top-k chunks and (unless ``answer`` is false) answer from them."""
        t0 = time.perf_counter()
        if not await _store_call(self.store.has_collection, body.collection):
            raise CollectionNotFound(body.collection)
        top_k = body.top_k or self.cfg.top_k
        emb = await self.deps.embed([body.query])
        embed_ms = _ms(t0)
        t_search = time.perf_counter()
        hits = await _store_call(self.store.search, body.collection, emb.vectors[0], top_k, body.filter)
        search_ms = _ms(t_search)
        answer, answer_ms, t_answer = None, 0.0, time.perf_counter()
        if body.answer and hits:
            answer = await self.deps.answer(body.query, hits)
            answer_ms = _ms(t_answer)
        return {"collection": body.collection, "query": body.query, "top_k": top_k,
                "answer": answer.text if answer else None,
                "answered_by": ({"model": answer.model, "upstream": answer.upstream,
                                 "fallback_from": answer.fallback_from, "usage": answer.usage}
                                if answer else None),
                "sources": [h.to_dict() for h in hits],
                "timings_ms": {"embed": embed_ms, "search": search_ms, "answer": answer_ms,
                               "total": _ms(t0)}}

    # -- collections ----------------------------------------------------------------------------
    async def collections(self) -> dict[str, Any]:
        infos = await _store_call(self.store.collections)
        return {"collections": [c.to_dict() for c in infos],
                "store": {"kind": self.store.kind, "location": self.store.location}}

    async def document(self, collection: str, doc_id: str, with_text: bool = True) -> dict[str, Any]:
        """A document as stored: its chunks by number (404 when the collection or document is unknown)."""
        if not await _store_call(self.store.has_collection, collection):
            raise CollectionNotFound(collection)
        hits = await _store_call(self.store.document, collection, doc_id)
        if not hits:
            raise ApiError(404, f"document '{doc_id}' is not in collection '{collection}'", code="document_not_found")
        return {"collection": collection, "id": doc_id, "chunks": len(hits),
                "chunk_numbers": [h.chunk_no for h in hits], "metadata": hits[0].metadata,
                **({"texts": [h.text for h in hits]} if with_text else {})}

    async def optimize(self, collection: str) -> dict[str, Any]:
        """Start a background optimize of an edge collection now (whatever its threshold); its index
        state as ``GET /collections/{name}`` shows it."""
        if not await _store_call(self.store.has_collection, collection):
            raise CollectionNotFound(collection)
        start = getattr(self.store, "optimize", None)
        if start is None:
            raise ApiError(409, f"the {self.store.kind} store optimizes itself", code="not_supported")
        return {"collection": collection, "index": await _store_call(start, collection, False)}

    async def collection(self, name: str) -> dict[str, Any]:
        if not await _store_call(self.store.has_collection, name):
            raise CollectionNotFound(name)
        infos = {c.name: c for c in await _store_call(self.store.collections)}
        return infos[name].to_dict()

"""RAG service: ``POST /index``, ``POST /query``, ``GET /collections``.

Index: documents (or files of an allowed folder) -> chunks -> vectors from the embedding service ->
the vector store, replacing each document's old points (point ids derive from document id and chunk
number, so re-indexing never duplicates). Query: embed, retrieve top-k, answer through the gateway
with the retrieved context, return the answer and its sources.

Store calls block (qdrant-client), so they run in worker threads. A dependency that is down gives
503 + Retry-After; an unknown collection 404; bad input 400 — all in the common error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from suite.rag.chunking import chunk_text
from suite.rag.deps import Dependencies, DependencyDown, DependencyError
from suite.rag.files import FolderError, documents_from_folder, resolve_folder
from suite.rag.schemas import IndexRequest, QueryRequest
from suite.settings import Settings
from suite.vectorstore import (
    CollectionNotFound,
    DimensionMismatch,
    Point,
    StoreError,
    StoreUnavailable,
    open_store,
)
from suite.web import ApiError, instrument
from suite.web.errors import error_response

log = logging.getLogger(__name__)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 1)


def create_app(settings: Settings) -> FastAPI:
    """The RAG service; it opens (and owns) the vector store in its lifespan."""
    cfg = settings.rag
    retry_after = {"Retry-After": str(cfg.retry_after_s)}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = await asyncio.to_thread(open_store, settings)
        app.state.http = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=2.0))
        app.state.deps = Dependencies(settings, app.state.http)
        app.state.write_lock = asyncio.Lock()
        watcher = asyncio.get_running_loop().create_task(app.state.deps.watch(), name="rag-dependency-watch")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await app.state.http.aclose()
            await asyncio.to_thread(app.state.store.close)

    app = FastAPI(title="suite rag", lifespan=lifespan)

    def health_info() -> dict[str, Any]:
        deps: Dependencies | None = getattr(app.state, "deps", None)
        store = getattr(app.state, "store", None)
        states = {k: v.to_dict() for k, v in deps.state.items()} if deps else {}
        out: dict[str, Any] = {"dependencies": states}
        if store is not None:
            # /health is open: a server URL is shown, a local path is not
            where = store.location if str(store.location).startswith("http") else "local"
            out["dependencies"]["vector_store"] = {"kind": store.kind, "location": where,
                                                   "state": "open"}
        out["degraded"] = any(d.get("state") == "down" for d in out["dependencies"].values())
        return out

    async def ready() -> dict[str, Any]:
        t0 = time.perf_counter()
        await asyncio.to_thread(app.state.store.ping)
        store_ms = _ms(t0)
        t1 = time.perf_counter()
        # the embedding service's /ready embeds one string; calling it needs no key (no probe holds one)
        emb = await app.state.deps.embedding_ready(cfg.embedding_timeout_s)
        return {"store": app.state.store.kind, "store_ms": store_ms, "embedding_ms": _ms(t1),
                "dimension": emb.get("dimension")}

    instrument(app, "rag", ready=ready, ready_timeout_s=cfg.embedding_timeout_s, health_info=health_info,
               settings=settings)
    _install_error_handlers(app, retry_after)

    async def store_call(fn, *args):
        return await asyncio.to_thread(fn, *args)

    @app.post("/index")
    async def index(body: IndexRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        docs = list(body.documents)
        if body.folder:
            try:
                folder = resolve_folder(body.folder, cfg.allowed_dirs)
                docs.extend(await asyncio.to_thread(documents_from_folder, folder))
            except FolderError as exc:
                raise ApiError(exc.status, str(exc), code="bad_folder") from None
        if not docs:
            raise ApiError(400, "nothing to index: give 'documents' (id, text, metadata) or a 'folder'",
                           code="no_documents")
        seen: set[str] = set()
        for doc in docs:
            if doc.id in seen:
                raise ApiError(400, f"document id '{doc.id}' appears twice in one request",
                               code="duplicate_id")
            seen.add(doc.id)
        chunked = [(doc, chunk_text(doc.text, cfg.chunk_chars, cfg.chunk_overlap)) for doc in docs]
        texts = [c for _, chunks in chunked for c in chunks]
        t_embed = time.perf_counter()
        emb = await app.state.deps.embed(texts)
        embed_ms = _ms(t_embed)
        if len(emb.vectors) != len(texts):
            raise DependencyError("embedding", 200, f"{len(emb.vectors)} vectors for {len(texts)} chunks")
        store = app.state.store
        t_store = time.perf_counter()
        async with app.state.write_lock:  # two re-indexes of one document must not interleave
            created = await store_call(store.ensure_collection, body.collection, emb.dimension)
            per_doc, offset = [], 0
            for doc, chunks in chunked:
                points = [Point(doc.id, n, text, emb.vectors[offset + n], doc.metadata)
                          for n, text in enumerate(chunks)]
                offset += len(chunks)
                await store_call(store.replace_document, body.collection, doc.id, points)
                per_doc.append({"id": doc.id, "chunks": len(chunks)})
            total = await store_call(store.count, body.collection)
        return {"collection": body.collection, "created": created, "documents": len(docs),
                "chunks": len(texts), "points_in_collection": total, "per_document": per_doc,
                "embedding_model": emb.model, "dimension": emb.dimension,
                "timings_ms": {"embed": embed_ms, "store": _ms(t_store), "total": _ms(t0)}}

    @app.post("/query")
    async def query(body: QueryRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        store = app.state.store
        if not await store_call(store.has_collection, body.collection):
            raise CollectionNotFound(body.collection)
        top_k = body.top_k or cfg.top_k
        emb = await app.state.deps.embed([body.query])
        embed_ms = _ms(t0)
        t_search = time.perf_counter()
        hits = await store_call(store.search, body.collection, emb.vectors[0], top_k)
        search_ms = _ms(t_search)
        answer, answer_ms, t_answer = None, 0.0, time.perf_counter()
        if body.answer and hits:
            answer = await app.state.deps.answer(body.query, hits)
            answer_ms = _ms(t_answer)
        return {"collection": body.collection, "query": body.query, "top_k": top_k,
                "answer": answer.text if answer else None,
                "answered_by": ({"model": answer.model, "upstream": answer.upstream,
                                 "fallback_from": answer.fallback_from, "usage": answer.usage}
                                if answer else None),
                "sources": [h.to_dict() for h in hits],
                "timings_ms": {"embed": embed_ms, "search": search_ms, "answer": answer_ms,
                               "total": _ms(t0)}}

    @app.get("/collections")
    async def collections() -> dict[str, Any]:
        store = app.state.store
        infos = await store_call(store.collections)
        return {"collections": [c.to_dict() for c in infos],
                "store": {"kind": store.kind, "location": store.location}}

    @app.get("/collections/{name}")
    async def collection(name: str) -> dict[str, Any]:
        store = app.state.store
        if not await store_call(store.has_collection, name):
            raise CollectionNotFound(name)
        infos = {c.name: c for c in await store_call(store.collections)}
        return infos[name].to_dict()

    return app


def _install_error_handlers(app: FastAPI, retry_after: dict[str, str]) -> None:
    """Store and dependency failures in the common shape: 503 + Retry-After when it may pass."""

    @app.exception_handler(DependencyDown)
    async def _down(_: Request, exc: DependencyDown) -> JSONResponse:
        log.warning("dependency down: %s", exc)
        return error_response(503, f"{exc.service} service unavailable ({exc.reason}); retry later",
                              code=f"{exc.service}_unavailable", headers=retry_after)

    @app.exception_handler(DependencyError)
    async def _dep_error(_: Request, exc: DependencyError) -> JSONResponse:
        if exc.status in (401, 403):  # the caller's own key, refused one hop further: the caller's error
            return error_response(exc.status, f"{exc.service}: {exc.message}", code="forbidden_downstream")
        log.error("dependency refused a request: %s", exc)
        return error_response(502, str(exc), code=f"{exc.service}_error")

    @app.exception_handler(StoreUnavailable)
    async def _store_down(_: Request, exc: StoreUnavailable) -> JSONResponse:
        return error_response(503, f"vector store unavailable: {exc}", code="store_unavailable",
                              headers=retry_after)

    @app.exception_handler(CollectionNotFound)
    async def _not_found(_: Request, exc: CollectionNotFound) -> JSONResponse:
        return error_response(404, str(exc), code="collection_not_found")

    @app.exception_handler(DimensionMismatch)
    async def _dims(_: Request, exc: DimensionMismatch) -> JSONResponse:
        return error_response(409, str(exc), code="dimension_mismatch")

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        log.error("vector store error: %s", exc)
        return error_response(502, f"vector store error: {exc}", type="upstream_error", code="store_error")

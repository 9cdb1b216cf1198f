"""How the RAG service answers store and dependency failures, in the common error shape.

A dependency that is down (or a store that cannot be reached) gives 503 + Retry-After; an unknown
collection 404; a dimension clash 409; a dependency that refused our own request 502.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from suite.rag.deps import DependencyDown, DependencyError
from suite.storage import is_disk_full
from suite.vectorstore import (
    CollectionNotFound,
    DimensionMismatch,
    InvalidFilter,
    StoreError,
    StoreUnavailable,
)
from suite.web.errors import disk_full_response, error_response

log = logging.getLogger(__name__)


def install_rag_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    retry_after = {"Retry-After": str(retry_after_s)}

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

    @app.exception_handler(InvalidFilter)
    async def _bad_filter(_: Request, exc: InvalidFilter) -> JSONResponse:
        return error_response(400, str(exc), code="bad_filter")

    @app.exception_handler(CollectionNotFound)
    async def _not_found(_: Request, exc: CollectionNotFound) -> JSONResponse:
        return error_response(404, str(exc), code="collection_not_found")

    @app.exception_handler(DimensionMismatch)
    async def _dims(_: Request, exc: DimensionMismatch) -> JSONResponse:
        return error_response(409, str(exc), code="dimension_mismatch")

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        if is_disk_full(exc):
            log.error("vector store write failed, the disk is full: %s", exc)
            return disk_full_response(exc)
        log.error("vector store error: %s", exc)
        return error_response(502, f"vector store error: {exc}", type="upstream_error", code="store_error")

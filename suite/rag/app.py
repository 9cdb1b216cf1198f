"""RAG service: ``POST /index``, ``POST /query``, ``GET /collections``.

Wiring only: the logic is ``service.RagService`` (it opens and owns the vector store), the routes
are ``routes.router``, failures map to statuses in ``errors``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from suite.backup.routes import install_rag_backup_route
from suite.instrument import instrument
from suite.rag.errors import install_rag_error_handlers
from suite.rag.routes import router
from suite.rag.service import RagService
from suite.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.rag = await RagService.open(settings)
        try:
            yield
        finally:
            await app.state.rag.close()

    app = FastAPI(title="suite rag", lifespan=lifespan)
    instrument(app, "rag", ready=lambda: app.state.rag.ready(), ready_timeout_s=settings.rag.embedding_timeout_s,
               health_info=lambda: app.state.rag.health_info(), settings=settings,
               storage=lambda: getattr(getattr(getattr(app.state, "rag", None), "store", None), "space", None))
    install_rag_error_handlers(app, settings.rag.retry_after_s)
    app.include_router(router)
    install_rag_backup_route(app, settings)
    return app

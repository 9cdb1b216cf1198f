"""RAG service: ``POST /index``, ``POST /query``, ``GET /collections``.

Wiring only: the logic is ``service.RagService`` (it opens and owns the vector store), the routes
are ``routes.router``, failures map to statuses in ``errors``.
"""

from __future__ import annotations

from fastapi import FastAPI

from suite.backup.routes import install_rag_backup_route
from suite.instrument import service_app
from suite.rag.errors import install_rag_error_handlers
from suite.rag.routes import router
from suite.rag.service import RagService
from suite.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    app = service_app("rag", settings, lambda app: RagService.open(settings), router=router,
                      ready_timeout_s=settings.rag.embedding_timeout_s,
                      storage=lambda rag: getattr(rag.store, "space", None))
    install_rag_error_handlers(app, settings.rag.retry_after_s)
    install_rag_backup_route(app, settings)
    return app

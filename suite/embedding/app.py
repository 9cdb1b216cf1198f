"""Embedding service: ``POST /embed``, OpenAI ``POST /v1/embeddings``, ``POST /reload``.

Wiring only: the logic is ``service.EmbeddingService`` (model loaded in the lifespan), the routes
are ``routes.router``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from suite.embedding.routes import router
from suite.embedding.service import EmbeddingMetrics, EmbeddingService
from suite.instrument import instrument
from suite.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """The embedding service; the model is loaded when the app starts (its lifespan)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.embedding = await EmbeddingService.open(settings, EmbeddingMetrics(app.state.metrics.registry))
        try:
            yield
        finally:
            await app.state.embedding.close()

    app = FastAPI(title="suite embedding", lifespan=lifespan)
    instrument(app, "embedding", ready=lambda: app.state.embedding.ready(),
               ready_timeout_s=settings.embedding.ready_timeout_s,
               health_info=lambda: app.state.embedding.health_info(), settings=settings)
    app.include_router(router)
    return app

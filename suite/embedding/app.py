"""Embedding service: ``POST /embed``, OpenAI ``POST /v1/embeddings``, ``POST /reload``.

Wiring only: the logic is ``service.EmbeddingService`` (model loaded in the lifespan), the routes
are ``routes.router``.
"""

from __future__ import annotations

from fastapi import FastAPI

from suite.embedding.routes import router
from suite.embedding.service import EmbeddingMetrics, EmbeddingService
from suite.instrument import service_app
from suite.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """The embedding service; the model is loaded when the app starts (its lifespan)."""
    return service_app("embedding", settings,
                       lambda app: EmbeddingService.open(settings, EmbeddingMetrics(app.state.metrics.registry)),
                       router=router, ready_timeout_s=settings.embedding.ready_timeout_s)

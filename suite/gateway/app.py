"""Gateway service: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

Wiring only: the logic (routing, retries, fallback, cooldown, relaying) is ``service.Gateway``,
the routes are ``routes.router``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from suite.gateway.routes import router
from suite.gateway.service import Gateway, GatewayMetrics
from suite.instrument import instrument
from suite.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.gateway = Gateway(settings, GatewayMetrics(app.state.metrics.registry))
        try:
            yield
        finally:
            await app.state.gateway.aclose()

    app = FastAPI(title="suite gateway", lifespan=lifespan)
    instrument(app, "gateway", ready=lambda: app.state.gateway.ready(),
               ready_timeout_s=settings.inference.ready_timeout_s + 10,
               health_info=lambda: app.state.gateway.health_info(), settings=settings)
    app.include_router(router)
    return app

"""Gateway service: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

Wiring only: the logic (routing, retries, fallback, cooldown, relaying) is ``service.Gateway``,
the routes are ``routes.router``.
"""

from __future__ import annotations

from fastapi import FastAPI

from suite.gateway.routes import router
from suite.gateway.service import Gateway, GatewayMetrics
from suite.instrument import service_app
from suite.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    return service_app("gateway", settings, lambda app: Gateway(settings, GatewayMetrics(app.state.metrics.registry)),
                       router=router, ready_timeout_s=settings.inference.ready_timeout_s + 10)

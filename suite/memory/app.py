"""Memory service (port 8005): ``/v1/memory/...`` projects, notes and search on SQLite.

Wiring only: the logic is ``service.MemoryService`` (store + maintainer task, started in the
lifespan), the routes are ``routes.router``; ``/v1/memory/health`` answers like the seeds'
memory-api, beside the standard ``/health`` and ``/ready``.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from suite.instrument import instrument
from suite.memory.routes import router
from suite.memory.service import MemoryService
from suite.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.memory = MemoryService.open(settings, app.state.metrics.registry)
        try:
            yield
        finally:
            await app.state.memory.close()

    app = FastAPI(title="suite memory", lifespan=lifespan)
    instrument(app, "memory", ready=lambda: app.state.memory.ready(), ready_timeout_s=10, settings=settings,
               storage=lambda: getattr(getattr(app.state, "memory", None), "space", None))
    app.include_router(router)
    return app

"""Memory service (port 8005): ``/v1/memory/...`` projects, notes and search on SQLite.

Wiring only: the logic is ``service.MemoryService`` (store + maintainer task, started in the
lifespan), the routes are ``routes.router``; ``/v1/memory/health`` answers like the seeds'
memory-api, beside the standard ``/health`` and ``/ready``.
"""

from __future__ import annotations

from fastapi import FastAPI

from suite.instrument import service_app
from suite.memory.routes import router
from suite.memory.service import MemoryService
from suite.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    return service_app("memory", settings, lambda app: MemoryService.open(settings, app.state.metrics.registry),
                       router=router, ready_timeout_s=10, storage=lambda memory: memory.space)

"""Memory service (port 8005): ``/v1/memory/...`` projects, notes and search on SQLite.

``/v1/memory/health`` answers like the seeds' memory-api (plus the standard ``/health`` and
``/ready``); the maintainer loop (retention, optimize/VACUUM, scheduled backup) starts in the lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from suite.auth.layer import require
from suite.auth.roles import RETENTION
from suite.memory.maintainer import Maintainer, MaintainerMetrics
from suite.memory.store import MemoryStore, MemoryStoreError
from suite.settings import Settings
from suite.web import ApiError, instrument


class ProjectIn(BaseModel):
    name: str = Field(description="1-64 characters: letters, digits, '_', '.', '-'")
    description: str = Field("", max_length=2000)
    retention_days: float | None = Field(None, gt=0, description="overrides settings.memory.retention_days")


class NoteIn(BaseModel):
    project: str = Field("default", description="created on first use")
    text: str
    tags: list[str] = Field(default_factory=list)


class SearchIn(BaseModel):
    query: str
    project: str | None = None
    tag: str | None = None
    limit: int = Field(10, ge=1, le=100)


def db_path(settings: Settings) -> Path:
    return Path(settings.memory.db_path or settings.data_dir / "memory" / "memory.db")


async def _call(fn, *args, **kwargs):
    """Run a store call in a thread; its errors become the common error shape."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except MemoryStoreError as exc:
        raise ApiError(exc.status, exc.message, code=exc.code) from None


def _no_path(record: dict | None) -> dict | None:
    """A job record for guests: the backup's file name, not where the data dir is."""
    if record and "path" in record:
        return {**record, "path": Path(record["path"]).name}
    return record


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = MemoryStore(db_path(settings), max_note_chars=settings.memory.max_note_chars)
        app.state.store = store
        app.state.maintainer = Maintainer(store, settings, MaintainerMetrics(app.state.metrics.registry))
        task = None
        if settings.memory.maintainer_enabled:
            task = asyncio.create_task(app.state.maintainer.loop(), name="memory-maintainer")
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            store.close()

    app = FastAPI(title="suite memory", lifespan=lifespan)
    started = time.time()

    async def ready() -> dict[str, Any]:
        ok = await asyncio.to_thread(app.state.store.integrity_ok)
        if not ok:
            raise RuntimeError("SQLite quick_check failed")
        return await asyncio.to_thread(app.state.store.counts)

    instrument(app, "memory", ready=ready, ready_timeout_s=10, settings=settings)

    @app.get("/v1/memory/health")
    async def memory_health() -> JSONResponse:
        try:
            counts = await asyncio.to_thread(app.state.store.counts)
        except Exception as exc:  # the seeds' health endpoint reports, it does not crash
            return JSONResponse({"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"},
                                status_code=503)
        m: Maintainer = app.state.maintainer
        return JSONResponse({
            "status": "healthy", "service": "memory-api", "database": app.state.store.path.name,
            **counts, "uptime_s": round(time.time() - started, 1),
            "maintainer": {"enabled": settings.memory.maintainer_enabled,
                           "last_maintain": m.last("maintain"), "last_backup": _no_path(m.last("backup"))},
        })

    @app.get("/v1/memory/projects")
    async def list_projects() -> dict:
        return {"projects": await _call(app.state.store.list_projects)}

    @app.post("/v1/memory/projects", status_code=201)
    async def create_project(body: ProjectIn, request: Request) -> dict:
        if body.retention_days is not None:  # a short retention deletes a project's notes: admin only
            require(request, RETENTION, "set retention_days")
        return await _call(app.state.store.ensure_project, body.name, body.description, body.retention_days)

    @app.get("/v1/memory/projects/{name}")
    async def get_project(name: str) -> dict:
        return await _call(app.state.store.get_project, name)

    @app.post("/v1/memory/notes", status_code=201)
    async def add_note(body: NoteIn) -> dict:
        note = await _call(app.state.store.add_note, body.project, body.text, body.tags)
        return note.to_dict()

    @app.get("/v1/memory/notes")
    async def list_notes(project: str | None = None, tag: str | None = None,
                         limit: int = Query(50, ge=1, le=500)) -> dict:
        notes = await _call(app.state.store.list_notes, project, tag, limit)
        return {"notes": [n.to_dict() for n in notes]}

    @app.get("/v1/memory/notes/{note_id}")
    async def get_note(note_id: int) -> dict:
        return (await _call(app.state.store.get_note, note_id)).to_dict()

    @app.delete("/v1/memory/notes/{note_id}")
    async def delete_note(note_id: int) -> dict:
        await _call(app.state.store.delete_note, note_id)
        return {"deleted": note_id}

    @app.get("/v1/memory/search")
    async def search_get(q: str = Query(..., min_length=1, max_length=2000), project: str | None = None,
                         tag: str | None = None, limit: int = Query(10, ge=1, le=100)) -> dict:
        return {"query": q, "results": await _call(app.state.store.search, q, project, tag, limit)}

    @app.post("/v1/memory/search")
    async def search_post(body: SearchIn) -> dict:
        results = await _call(app.state.store.search, body.query, body.project, body.tag, body.limit)
        return {"query": body.query, "results": results}

    async def run_job(job: str) -> JSONResponse:
        record = await app.state.maintainer.run_job(job)
        return JSONResponse(record, status_code=200 if record["outcome"] == "ok" else 500)

    # one route per job, so the policy table gives each its own permission (suite.auth.policy)
    @app.post("/v1/memory/admin/maintain")
    async def run_maintain() -> JSONResponse:
        return await run_job("maintain")

    @app.post("/v1/memory/admin/backup")
    async def run_backup() -> JSONResponse:
        return await run_job("backup")

    @app.get("/v1/memory/admin/backups")
    async def list_backups() -> dict:
        m: Maintainer = app.state.maintainer
        return {"backup_dir": str(m.backup_dir), "backups": await asyncio.to_thread(m.list_backups)}

    return app

"""The memory service's HTTP routes; the logic is ``MemoryService`` on ``app.state.memory``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from suite.auth.layer import require
from suite.auth.roles import RETENTION
from suite.memory.schemas import (
    MAX_QUERY_CHARS,
    NoteId,
    NoteIn,
    ProjectFilter,
    ProjectIn,
    SearchIn,
    TagFilter,
)
from suite.memory.service import MemoryService
from suite.web import from_state

router = APIRouter(prefix="/v1/memory")
Memory = Annotated[MemoryService, from_state("memory")]


@router.get("/health")
async def memory_health(memory: Memory) -> JSONResponse:
    status, body = await memory.health()
    return JSONResponse(body, status_code=status)


@router.get("/projects")
async def list_projects(memory: Memory) -> dict:
    return {"projects": await memory.call(memory.store.list_projects)}


@router.post("/projects", status_code=201)
async def create_project(body: ProjectIn, memory: Memory, request: Request) -> dict:
    if body.retention_days is not None:  # a short retention deletes a project's notes: admin only
        require(request, RETENTION, "set retention_days")
    return await memory.write(memory.store.ensure_project, body.name, body.description, body.retention_days)


@router.get("/projects/{name}")
async def get_project(name: Annotated[str, Path(max_length=64)], memory: Memory) -> dict:
    return await memory.call(memory.store.get_project, name)


@router.post("/notes", status_code=201)
async def add_note(body: NoteIn, memory: Memory) -> dict:
    return (await memory.write(memory.store.add_note, body.project, body.text, body.tags)).to_dict()


@router.get("/notes")
async def list_notes(memory: Memory, project: ProjectFilter = None, tag: TagFilter = None,
                     limit: int = Query(50, ge=1, le=500)) -> dict:
    notes = await memory.call(memory.store.list_notes, project, tag, limit)
    return {"notes": [n.to_dict() for n in notes]}


@router.get("/notes/{note_id}")
async def get_note(note_id: NoteId, memory: Memory) -> dict:
    return (await memory.call(memory.store.get_note, note_id)).to_dict()


@router.delete("/notes/{note_id}")
async def delete_note(note_id: NoteId, memory: Memory) -> dict:
    await memory.call(memory.store.delete_note, note_id)
    return {"deleted": note_id}


@router.get("/search")
async def search_get(memory: Memory, q: str = Query(..., min_length=1, max_length=MAX_QUERY_CHARS),
                     project: ProjectFilter = None, tag: TagFilter = None,
                     limit: int = Query(10, ge=1, le=100)) -> dict:
    return {"query": q, "results": await memory.call(memory.store.search, q, project, tag, limit)}


@router.post("/search")
async def search_post(body: SearchIn, memory: Memory) -> dict:
    results = await memory.call(memory.store.search, body.query, body.project, body.tag, body.limit)
    return {"query": body.query, "results": results}


async def _run_job(job: str, memory: MemoryService) -> JSONResponse:
    record = await memory.run_job(job)
    status = 200 if record["outcome"] == "ok" else 507 if record.get("disk_full") else 500
    return JSONResponse(record, status_code=status)


# one route per job, so the policy table gives each its own permission (suite.auth.policy)
@router.post("/admin/maintain")
async def run_maintain(memory: Memory) -> JSONResponse:
    return await _run_job("maintain", memory)


@router.post("/admin/backup")
async def run_backup(memory: Memory) -> JSONResponse:
    return await _run_job("backup", memory)


@router.get("/admin/backups")
async def list_backups(memory: Memory) -> dict:
    return await memory.backups()

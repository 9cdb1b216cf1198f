"""The RAG service's HTTP routes; the logic is ``suite.rag.service.RagService`` on ``app.state.rag``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from suite.rag.schemas import IndexRequest, QueryRequest
from suite.rag.service import RagService
from suite.web import from_state
from suite.web.disconnect import until_disconnected

router = APIRouter()
Rag = Annotated[RagService, from_state("rag")]


@router.post("/index")
async def index(body: IndexRequest, rag: Rag) -> dict[str, Any]:
    return await rag.index(body)


@router.post("/query")
async def query(request: Request, body: QueryRequest, rag: Rag) -> dict[str, Any]:
    return await until_disconnected(request, rag.query(body))  # a client that left stops its answer


@router.get("/collections")
async def collections(rag: Rag) -> dict[str, Any]:
    return await rag.collections()


@router.get("/collections/{name}")
async def collection(name: Annotated[str, Path(max_length=64)], rag: Rag) -> dict[str, Any]:
    return await rag.collection(name)

"""The RAG service's HTTP routes; the logic is ``suite.rag.service.RagService`` on ``app.state.rag``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

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


@router.get("/collections/{name}/documents/{doc_id}")
async def document(name: Annotated[str, Path(max_length=64)], doc_id: Annotated[str, Path(max_length=256)],
                   rag: Rag, text: bool = Query(True, description="include each chunk's text")) -> dict[str, Any]:
    """A document as stored: how many chunks, their numbers (0..n-1 when whole), its metadata."""
    return await rag.document(name, doc_id, text)


@router.post("/admin/optimize/{name}")
async def optimize(name: Annotated[str, Path(max_length=64)], rag: Rag) -> dict[str, Any]:
    """Start the edge store's background optimize of a collection now; returns at once."""
    return await rag.optimize(name)

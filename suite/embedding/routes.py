"""The embedding service's HTTP routes; the logic is ``EmbeddingService`` on ``app.state.embedding``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter

from suite.embedding.schemas import EmbedRequest, OpenAIEmbeddingRequest, ReloadRequest
from suite.embedding.service import EmbeddingService
from suite.web import from_state

router = APIRouter()
Embedding = Annotated[EmbeddingService, from_state("embedding")]


@router.post("/embed")
async def embed(body: EmbedRequest, service: Embedding) -> dict[str, Any]:
    return await service.embed(body)


@router.post("/v1/embeddings")
async def openai_embeddings(body: OpenAIEmbeddingRequest, service: Embedding) -> dict[str, Any]:
    return await service.openai_embeddings(body)


@router.get("/v1/models")
async def models(service: Embedding) -> dict[str, Any]:
    return service.models()


@router.post("/reload")
async def reload(service: Embedding, body: ReloadRequest | None = None) -> dict[str, Any]:
    return await service.reload(body or ReloadRequest())

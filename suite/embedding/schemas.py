"""Request bodies of the embedding service (validation errors become 400 in the common shape)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EmbedRequest(BaseModel):
    texts: list[str] = Field(description="texts to embed; beyond the limits they are cut and reported")


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI ``POST /v1/embeddings``; token-array inputs are refused with a clear message."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class ReloadRequest(BaseModel):
    model_path: str | None = Field(None, description="sentence-transformers model dir (default: configured)")
    model_name: str | None = Field(None, description="name reported in responses (default: the dir name)")

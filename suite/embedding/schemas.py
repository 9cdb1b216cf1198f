"""Request bodies of the embedding service (validation errors become 400 in the common shape).

Beyond ``embedding.max_texts`` texts and ``embedding.max_chars`` characters a request is cut and the
cut reported, never refused (the seed's contract); the whole body is bounded by
``guard.service_max_body_bytes["embedding"]`` (16 MiB) and ``guard.max_json_values``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EmbedRequest(BaseModel):
    texts: list[str] = Field(description="texts to embed; beyond embedding.max_texts texts (1024) and "
                                         "embedding.max_chars characters (8000) they are cut and reported")


class OpenAIEmbeddingRequest(BaseModel):
    """OpenAI ``POST /v1/embeddings``; token-array inputs are refused with a clear message."""

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = Field(None, max_length=256)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1, le=65536, description="must equal the model's dimension")
    user: str | None = Field(None, max_length=256)


class ReloadRequest(BaseModel):
    model_path: str | None = Field(None, max_length=4096,
                                   description="sentence-transformers model dir (default: configured)")
    model_name: str | None = Field(None, max_length=256,
                                   description="name reported in responses (default: the dir name)")

"""Request bodies of the RAG service (validation errors become 400 in the common shape)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class Document(BaseModel):
    id: str = Field(min_length=1, max_length=256, description="stable id; re-indexing it replaces it")
    text: str = Field(min_length=1, description="document text (any language)")
    metadata: dict[str, Any] = Field(default_factory=dict)


class IndexRequest(BaseModel):
    collection: str = Field(pattern=COLLECTION_PATTERN, description="created on first use")
    documents: list[Document] = Field(default_factory=list)
    folder: str | None = Field(None, description="index files from this folder (inside rag.allowed_dirs)")


class QueryRequest(BaseModel):
    collection: str = Field(pattern=COLLECTION_PATTERN)
    query: str = Field(min_length=1, max_length=8000)
    top_k: int | None = Field(None, ge=1, le=50, description="default: rag.top_k")
    answer: bool = Field(True, description="false = retrieval only, no call to the gateway")
    filter: dict[str, str | int | bool | list[str] | list[int]] | None = Field(
        None, max_length=16, description="metadata filter: every key must match; a list matches any of its values")

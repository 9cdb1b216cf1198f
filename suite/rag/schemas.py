"""Request bodies of the RAG service, with their limits (validation errors become 400 in the common shape).

A body is also bounded as a whole by ``guard.service_max_body_bytes["rag"]`` (16 MiB by default).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"
MAX_DOCUMENTS = 1000
MAX_DOCUMENT_CHARS = 4_000_000
MAX_METADATA_KEYS = 64
MAX_QUERY_CHARS = 8000

CollectionName = Annotated[str, Field(pattern=COLLECTION_PATTERN, description="1-64 characters: letters, "
                                      "digits, '_', '.', '-' (starting with a letter or digit)")]


class Document(BaseModel):
    id: str = Field(min_length=1, max_length=256, description="stable id; re-indexing it replaces it")
    text: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS, description="document text (any language)")
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=MAX_METADATA_KEYS,
                                     description="stored with every chunk and returned with each source")


class IndexRequest(BaseModel):
    collection: CollectionName = Field(description="created on first use")
    documents: list[Document] = Field(default_factory=list, max_length=MAX_DOCUMENTS)
    folder: str | None = Field(None, max_length=4096,
                               description="index files from this folder (inside rag.allowed_dirs)")


class QueryRequest(BaseModel):
    collection: CollectionName
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS,
                       description="the question; cut to fit the chat model's context when answered")
    top_k: int | None = Field(None, ge=1, le=50, description="default: rag.top_k")
    answer: bool = Field(True, description="false = retrieval only, no call to the gateway")
    filter: dict[str, str | int | bool | list[str] | list[int]] | None = Field(
        None, max_length=16, description="metadata filter: every key must match; a list matches any of its values")

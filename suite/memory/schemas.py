"""Request bodies of the memory service (validation errors become 400 in the common shape)."""

from __future__ import annotations

from pydantic import BaseModel, Field


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

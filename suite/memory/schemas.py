"""Request bodies and parameters of the memory service, with the limits the store enforces.

Validation errors become 400 in the common shape. The note text's schema bound is the largest value
``memory.max_note_chars`` may take; the configured limit (default 100,000) answers 413 beyond it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query
from pydantic import BaseModel, Field

PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_NOTE_CHARS = 1_000_000
MAX_QUERY_CHARS = 2000
MAX_TAGS = 32
ID_MAX = 2**63 - 1  # SQLite's INTEGER

ProjectName = Annotated[str, Field(pattern=PROJECT_PATTERN, description="1-64 characters: letters, digits, "
                                   "'_', '.', '-' (starting with a letter or digit)")]
Tag = Annotated[str, Field(min_length=1, max_length=64)]
NoteId = Annotated[int, Path(ge=1, le=ID_MAX, description="a note id")]
ProjectFilter = Annotated[str | None, Query(max_length=64, description="only notes of this project")]
TagFilter = Annotated[str | None, Query(max_length=64, description="only notes with this tag")]


class ProjectIn(BaseModel):
    name: ProjectName
    description: str = Field("", max_length=2000)
    retention_days: float | None = Field(None, gt=0, le=36500,
                                         description="overrides settings.memory.retention_days")


class NoteIn(BaseModel):
    project: ProjectName = Field("default", description="created on first use")
    text: str = Field(min_length=1, max_length=MAX_NOTE_CHARS,
                      description="the note; longer than memory.max_note_chars (default 100,000) is a 413")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS)


class SearchIn(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="words to find (all must match)")
    project: str | None = Field(None, max_length=64)
    tag: str | None = Field(None, max_length=64)
    limit: int = Field(10, ge=1, le=100)

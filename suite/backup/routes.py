"""The RAG service's backup route: ``POST /admin/backup`` writes the vector-store part of a set.

Admin-only (permission ``backup``: the route belongs in the trust boundary's policy table as such).
The body names a set the ``suite backup`` run has already opened (``<backups>/<set>.partial/``) —
never a path — so a caller can make the service write only where backups go. The copy is taken under
the service's own write lock (no ``/index`` interleaves) and the store's (``writes_paused``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from suite.backup.runner import vector_part
from suite.backup.sets import PARTIAL, BackupError, check_set_id
from suite.settings import Settings
from suite.web import ApiError

PERMISSION = "backup"


class BackupRequest(BaseModel):
    set: str = Field(max_length=64, description="id of a set being written by `suite backup create`")


def install_rag_backup_route(app: FastAPI, settings: Settings) -> None:
    @app.post("/admin/backup", openapi_extra={"x-permission": PERMISSION})
    async def backup(body: BackupRequest) -> dict[str, Any]:
        try:
            set_id = check_set_id(body.set)
        except BackupError as exc:
            raise ApiError(400, str(exc), code="bad_set_id") from None
        folder = settings.backup_dir / f"{set_id}{PARTIAL}"
        if not folder.is_dir():
            raise ApiError(404, f"no backup set {set_id} is being written in {settings.backup_dir}",
                           code="unknown_set")
        target = folder / "rag"
        rag = app.state.rag  # suite.rag.service.RagService: owns the store and the write lock
        async with rag.write_lock:
            if target.exists():
                raise ApiError(409, f"set {set_id} already has a rag part", code="part_exists")
            try:
                return await asyncio.to_thread(vector_part, rag.store, target)
            except BackupError as exc:
                raise ApiError(500, f"vector store backup failed: {exc}", type="server_error",
                               code="backup_failed") from None

"""The memory service's logic: the SQLite store, its maintainer task, and store calls off the loop.

``/v1/memory/health`` answers like the seeds' memory-api; the maintainer loop (retention,
optimize/VACUUM, scheduled backup) runs as a task beside the routes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from suite.aiotasks import cancel_and_wait
from suite.memory.maintainer import Maintainer, MaintainerMetrics
from suite.memory.store import MemoryStore, MemoryStoreError
from suite.settings import Settings
from suite.storage import SpaceGuard
from suite.web import ApiError

JOBS = ("maintain", "backup")


def db_path(settings: Settings) -> Path:
    return settings.memory_db_path


class MemoryService:
    """The store and its maintainer; built in the app's lifespan (``app.state.memory``)."""

    def __init__(self, settings: Settings, store: MemoryStore, maintainer: Maintainer) -> None:
        self.settings = settings
        self.store = store
        self.maintainer = maintainer
        self.space = SpaceGuard(store.path.parent, settings.storage.reserve_bytes, "the memory database")
        self.started = time.time()
        self._task: asyncio.Task | None = None

    @classmethod
    def open(cls, settings: Settings, registry: CollectorRegistry) -> MemoryService:
        store = MemoryStore(db_path(settings), max_note_chars=settings.memory.max_note_chars)
        service = cls(settings, store, Maintainer(store, settings, MaintainerMetrics(registry)))
        if settings.memory.maintainer_enabled:
            service._task = asyncio.create_task(service.maintainer.loop(), name="memory-maintainer")
        return service

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self.store.close()

    async def write(self, fn, *args, **kwargs):
        """A store call that writes: refused with 507 first when the disk cannot take it."""
        await asyncio.to_thread(self.space.check)
        return await self.call(fn, *args, **kwargs)

    async def call(self, fn, *args, **kwargs):
        """Run a store call in a thread; its errors become the common error shape."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except MemoryStoreError as exc:
            raise ApiError(exc.status, exc.message, code=exc.code) from None

    # -- probes ---------------------------------------------------------------------------------
    async def ready(self) -> dict[str, Any]:
        if not await asyncio.to_thread(self.store.integrity_ok):
            raise RuntimeError("SQLite quick_check failed")
        return await asyncio.to_thread(self.store.counts)

    async def health(self) -> tuple[int, dict[str, Any]]:
        """The seeds' memory-api health: (status, body); it reports a broken store, it does not crash."""
        try:
            counts = await asyncio.to_thread(self.store.counts)
        except Exception as exc:
            return 503, {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"}
        m = self.maintainer
        # guests read this: file names, never where the data dir is
        return 200, {"status": "healthy", "service": "memory-api", "database": self.store.path.name,
                     **counts, "uptime_s": round(time.time() - self.started, 1),
                     "maintainer": {"enabled": self.settings.memory.maintainer_enabled,
                                    "last_maintain": m.last("maintain"),
                                    "last_backup": _no_path(m.last("backup"))}}

    # -- maintenance ----------------------------------------------------------------------------
    async def run_job(self, job: str) -> dict[str, Any]:
        if job not in JOBS:
            raise ApiError(404, f"unknown job '{job}'; known: {', '.join(JOBS)}", code="unknown_job")
        return await self.maintainer.run_job(job)

    async def backups(self) -> dict[str, Any]:
        m = self.maintainer
        return {"backup_dir": str(m.backup_dir), "backups": await asyncio.to_thread(m.list_backups)}


def _no_path(record: dict | None) -> dict | None:
    """A job record for guests: the backup's file name, not where the data dir is."""
    if record and "path" in record:
        return {**record, "path": Path(record["path"]).name}
    return record

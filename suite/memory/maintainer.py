"""The memory maintainer: retention by age, optimize/VACUUM and scheduled online backups.

Scheduled backups are kept by count *and* age (``backups_kept``, ``backups_keep_days``), and the first
one after a start waits for the schedule when a recent backup exists — a service restarting in a loop
used to back up 5 s after every start and rotate away all history within a minute.

Runs as an asyncio task started in the service's lifespan; each job runs in a worker thread, is
logged, and is counted in the service's metrics. Jobs can also be triggered over HTTP (admin routes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from suite.memory.store import MemoryStore
from suite.retention import expired
from suite.settings import Settings
from suite.storage import SpaceGuard, is_disk_full

log = logging.getLogger(__name__)


class MaintainerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.runs = Counter("memory_maintenance_runs_total", "maintainer job runs", ["job", "outcome"],
                            registry=registry)
        self.deleted = Counter("memory_retention_deleted_notes_total", "notes removed by retention",
                               registry=registry)
        self.last_run = Gauge("memory_maintenance_last_run_timestamp_seconds", "last successful job run",
                              ["job"], registry=registry)
        self.backup_bytes = Gauge("memory_backup_size_bytes", "size of the latest backup", registry=registry)


@dataclass
class Maintainer:
    """Owns the schedule; ``run_job`` is the one entry point for both the loop and HTTP triggers."""

    store: MemoryStore
    settings: Settings
    metrics: MaintainerMetrics
    history: list[dict[str, Any]] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def backup_dir(self) -> Path:
        return Path(self.settings.memory.backup_dir or self.settings.data_dir / "memory" / "backups")

    # -- jobs (blocking; run in a thread) -------------------------------------------------------
    def _maintain(self) -> dict[str, Any]:
        deleted = self.store.apply_retention(self.settings.memory.retention_days)
        self.store.optimize(vacuum=True)
        total = sum(deleted.values())
        self.metrics.deleted.inc(total)
        return {"deleted": deleted, "deleted_total": total}

    def _backup(self) -> dict[str, Any]:
        SpaceGuard(self.backup_dir, self.settings.storage.reserve_bytes, "the memory backups").check(
            self.store.path.stat().st_size)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"{int(time.time() * 1000) % 1000:03d}Z"
        path = self.store.backup(self.backup_dir / f"memory-{stamp}.db")
        size = path.stat().st_size
        self.metrics.backup_bytes.set(size)
        removed = self._prune()
        return {"path": str(path), "bytes": size, "pruned": removed}

    def _prune(self) -> list[str]:
        """Retention by count *and* age: the newest ``backups_kept`` and anything younger than
        ``backups_keep_days`` stay, so a crash loop of start-up backups cannot rotate history away."""
        cfg = self.settings.memory
        backups = {p.name: p for p in self.backup_dir.glob("memory-*.db")}
        _, old = expired([(name, p.stat().st_mtime) for name, p in backups.items()], cfg.backups_kept,
                         cfg.backups_keep_days)
        for name in old:
            backups[name].unlink(missing_ok=True)
        for leftover in self.backup_dir.glob("memory-*.db.partial"):  # a backup cut short by a crash
            if time.time() - leftover.stat().st_mtime > 3600:
                leftover.unlink(missing_ok=True)
        return old

    def first_backup_delay_s(self, now: float | None = None) -> float:
        """Seconds until the first scheduled backup: the start-up delay, or — when a backup younger than
        ``backup_every_s`` exists — the rest of its interval (restarts do not add backups)."""
        cfg = self.settings.memory
        now = now or time.time()
        newest = max((p.stat().st_mtime for p in self.backup_dir.glob("memory-*.db")), default=None)
        if newest is None or now - newest >= cfg.backup_every_s:
            return cfg.maintainer_start_delay_s
        return max(cfg.maintainer_start_delay_s, newest + cfg.backup_every_s - now)

    def list_backups(self) -> list[dict[str, Any]]:
        return [{"path": str(p), "bytes": p.stat().st_size, "mtime": p.stat().st_mtime}
                for p in sorted(self.backup_dir.glob("memory-*.db"))]

    async def run_job(self, job: str) -> dict[str, Any]:
        """Run 'maintain' or 'backup' now (one job at a time); return its record."""
        fn = {"maintain": self._maintain, "backup": self._backup}[job]
        async with self._lock:
            t0 = time.perf_counter()
            record: dict[str, Any] = {"job": job, "started_at": time.time()}
            try:
                record.update(await asyncio.to_thread(fn))
                record["outcome"] = "ok"
                self.metrics.last_run.labels(job).set(time.time())
                log.info("memory %s done: %s", job, {k: v for k, v in record.items() if k != "started_at"})
            except Exception as exc:  # a failed job is logged and counted; the loop goes on
                record.update(outcome="error", error=f"{type(exc).__name__}: {exc}")
                if is_disk_full(exc):
                    record["disk_full"] = True
                    log.error("memory %s skipped: %s", job, exc)
                else:
                    log.exception("memory %s failed", job)
            record["duration_s"] = round(time.perf_counter() - t0, 3)
            self.metrics.runs.labels(job, record["outcome"]).inc()
            self.history = (self.history + [record])[-20:]
            return record

    # -- the loop -------------------------------------------------------------------------------
    async def loop(self) -> None:
        """Run each job when it is due, forever (cancelled at shutdown)."""
        cfg = self.settings.memory
        start = time.monotonic() + cfg.maintainer_start_delay_s
        due = {"maintain": start, "backup": time.monotonic() + self.first_backup_delay_s()}
        every = {"maintain": cfg.maintain_every_s, "backup": cfg.backup_every_s}
        while True:
            now = time.monotonic()
            for job in ("maintain", "backup"):
                if now >= due[job]:
                    await self.run_job(job)
                    due[job] = time.monotonic() + every[job]
            await asyncio.sleep(max(0.05, min(due.values()) - time.monotonic()))

    def last(self, job: str) -> dict[str, Any] | None:
        for record in reversed(self.history):
            if record["job"] == job:
                return record
        return None

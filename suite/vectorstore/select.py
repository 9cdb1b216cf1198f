"""Which store the settings choose, and what an operator must hear about a store left behind.

``rag.qdrant_url`` set → the Qdrant server; else ``rag.store``: ``edge`` (the default) or ``local``.
When the edge store opens and a qdrant-client local-mode store with collections sits at
``rag.qdrant_path`` (the default before the edge store) and was never migrated, the edge store does
**not** read it, copy it or delete it: it says so (log warning, ``/health``, ``suite rag status``) and
``suite rag migrate`` copies it on request.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.settings import Settings

log = logging.getLogger(__name__)

MIGRATED_MARKER = "MIGRATED_TO_EDGE.json"
# a rag service restarted by its supervisor right after a kill -9 waits this long for the store's lock
# while its predecessor finishes exiting (seen in the durability drill: ~2 s after the kill)
STORE_LOCK_WAIT_S = 10.0


@dataclass
class LocalStoreFound:
    """A qdrant-client local-mode store on disk, read without opening it (no lock taken)."""

    path: Path
    collections: dict[str, int | None]  # name -> points (None when unreadable)
    migrated: dict[str, Any] | None  # the marker `suite rag migrate` leaves, if any

    @property
    def points(self) -> int:
        return sum(n or 0 for n in self.collections.values())

    def notice(self) -> str:
        names = ", ".join(f"{k} ({v if v is not None else '?'} points)" for k, v in self.collections.items())
        if self.migrated:
            return (f"the qdrant-client local store at {self.path} ({names}) was migrated to the edge store "
                    f"at {self.migrated.get('at', '?')}; it is kept, unused, as a fallback "
                    f"(SUITE_RAG__STORE=local)")
        return (f"a qdrant-client local store with data sits at {self.path} ({names}) and the edge store "
                f"does not read it: run `suite rag migrate` to copy it into the edge store, or set "
                f"SUITE_RAG__STORE=local to keep using it")


def find_local_store(path: Path) -> LocalStoreFound | None:
    """The local-mode store at ``path`` when it holds at least one collection, else None."""
    meta = path / "meta.json"
    if not meta.is_file():
        return None
    try:
        names = sorted(json.loads(meta.read_text(encoding="utf-8")).get("collections", {}))
    except (OSError, ValueError):
        names = []
    if not names:
        return None
    counts = {name: _count_points(path / "collection" / name / "storage.sqlite") for name in names}
    marker = path / MIGRATED_MARKER
    migrated = None
    if marker.is_file():
        try:
            migrated = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            migrated = {"at": "unknown (unreadable marker)"}
    return LocalStoreFound(path, counts, migrated)


def _count_points(db: Path) -> int | None:
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT count(*) FROM points").fetchone()[0])
    except sqlite3.Error:
        return None


def open_store(settings: Settings):
    """The store the settings choose (see the module docstring); the caller owns and closes it."""
    from suite.vectorstore.edge import EdgeStore
    from suite.vectorstore.qdrant import EmbeddedQdrantStore, ServerQdrantStore

    chosen = settings.vector_store()
    if chosen["kind"] == "server":
        return ServerQdrantStore(chosen["location"], api_key=settings.qdrant_api_key())
    if chosen["kind"] == "local":
        return EmbeddedQdrantStore(chosen["location"])
    store = EdgeStore(chosen["location"], optimize_threshold=settings.rag.optimize_threshold,
                      optimize_threads=settings.rag.optimize_threads, reserve_bytes=settings.storage.reserve_bytes,
                      lock_wait_s=STORE_LOCK_WAIT_S)
    legacy = find_local_store(settings.local_store_path)
    if legacy is not None:
        store.notices.append(legacy.notice())
        (log.info if legacy.migrated else log.warning)(legacy.notice())
    return store

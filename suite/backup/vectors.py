"""The vector store's part of a backup set: a snapshot in the shard format, plus a portable export.

Per collection, written while the store's writes are held (``writes_paused``; the RAG service also
holds its own write lock), so both files describe one state:

* ``<c>.snapshot`` — the shard snapshot: from the edge store, its own snapshot (a tar of the flushed
  shard that ``EdgeShard.unpack_snapshot`` reads); from a Qdrant server, its shard snapshot API
  (create, download, sha256 checked against the server's checksum). One format, one restore path:
  either kind unpacks into an edge shard. qdrant-client local mode has no snapshot: export only.
* ``<c>.points.jsonl.gz`` + ``<c>.config.json`` — ids, vectors and payloads, and the collection
  config: restores into any kind of store (an embedded backup seeds a server, and back).

Restore prefers the snapshot where the target can take it (edge ← any shard snapshot; server ← a
server snapshot, uploaded with ``priority=snapshot`` and its sha256) and imports the export otherwise.
Either way the restored collection must hold exactly the manifest's point count.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

import httpx

from suite.backup.sets import BackupError, sha256_file
from suite.fsio import write_json
from suite.vectorstore import EdgeStore, Point, ServerQdrantStore
from suite.vectorstore.base import point_from_payload

log = logging.getLogger(__name__)

EXPORT_BATCH = 512
SERVER_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


def backup_vectors(store, folder: Path) -> dict[str, Any]:
    """Write every collection of ``store`` into ``folder``; returns the manifest part."""
    folder.mkdir(parents=True, exist_ok=True)
    collections: dict[str, Any] = {}
    with store.writes_paused():
        for info in store.collections():
            entry: dict[str, Any] = {"points": info.points, "dimension": info.dimension}
            if isinstance(store, EdgeStore):
                snap = store.snapshot(info.name, folder / f"{info.name}.snapshot")
                entry.update(snapshot=f"{info.name}.snapshot", snapshot_format="edge-shard",
                             points=snap["points"])
            elif isinstance(store, ServerQdrantStore):
                entry.update(server_snapshot(store, info.name, folder / f"{info.name}.snapshot"))
            exported = export_collection(store, info.name, info.dimension, folder)
            if exported != entry["points"]:
                raise BackupError(f"collection {info.name}: snapshot holds {entry['points']} points, "
                                  f"export {exported} (writes were not held)")
            entry.update(export=f"{info.name}.points.jsonl.gz", config=f"{info.name}.config.json")
            collections[info.name] = entry
    store_info = {k: v for k, v in store.describe().items() if k in ("kind", "location", "engine")}
    return {"store": store_info, "collections": collections}


def export_collection(store, name: str, dimension: int | None, folder: Path) -> int:
    n = 0
    with gzip.open(folder / f"{name}.points.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as fh:
        for batch in store.iter_points(name, batch=EXPORT_BATCH):
            for p in batch:
                fh.write(json.dumps({"id": p.id, "vector": p.vector, "payload": p.payload()},
                                    ensure_ascii=False) + "\n")
                n += 1
    write_json(folder / f"{name}.config.json",
               {"name": name, "dimension": dimension, "distance": "Cosine", "points": n})
    return n


def read_export(path: Path) -> list[Point]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [point_from_payload(row["payload"], row["vector"]) for row in map(json.loads, fh)]


# -- a Qdrant server's shard snapshot API ----------------------------------------------------------
def _server(store: ServerQdrantStore) -> tuple[str, dict[str, str]]:
    return store.location.rstrip("/"), ({"api-key": store.api_key} if store.api_key else {})


def server_snapshot(store: ServerQdrantStore, collection: str, dest: Path) -> dict[str, Any]:
    """Create a shard snapshot on the server, download it, check its sha256, delete it server-side."""
    url, headers = _server(store)
    base = f"{url}/collections/{collection}/shards/0/snapshots"
    with httpx.Client(timeout=SERVER_TIMEOUT, headers=headers) as http:
        created = http.post(base, params={"wait": "true"})
        created.raise_for_status()
        desc = created.json()["result"]
        with http.stream("GET", f"{base}/{desc['name']}") as resp:
            resp.raise_for_status()
            with open(dest, "wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)
        http.delete(f"{base}/{desc['name']}")
    digest = sha256_file(dest)
    if desc.get("checksum") and desc["checksum"] != digest:
        raise BackupError(f"snapshot of {collection} downloaded with sha256 {digest}, server says "
                          f"{desc['checksum']}")
    return {"snapshot": dest.name, "snapshot_format": "server-shard", "snapshot_sha256": digest}


def server_recover(store: ServerQdrantStore, collection: str, snapshot: Path, sha256: str) -> None:
    """Upload a shard snapshot; the server checks the checksum and lets the snapshot win (priority)."""
    url, headers = _server(store)
    if not store.has_collection(collection):
        raise BackupError(f"server recovery of {collection} needs the collection to exist (import instead)")
    with httpx.Client(timeout=SERVER_TIMEOUT, headers=headers) as http, open(snapshot, "rb") as fh:
        resp = http.post(f"{url}/collections/{collection}/shards/0/snapshots/upload",
                         params={"priority": "snapshot", "checksum": sha256, "wait": "true"},
                         files={"snapshot": (snapshot.name, fh, "application/octet-stream")})
    if resp.status_code >= 400:
        raise BackupError(f"server refused the snapshot of {collection}: HTTP {resp.status_code} {resp.text[:300]}")


# -- restore --------------------------------------------------------------------------------------
def restore_vectors(store, folder: Path, part: dict[str, Any], exact: bool = False) -> dict[str, Any]:
    """Restore every collection of ``part`` (files in ``folder``) into ``store``; ``exact`` also drops
    collections the set does not have. Returns per collection: points and the path taken."""
    out: dict[str, Any] = {}
    wanted = part.get("collections", {})
    if exact:
        for info in store.collections():
            if info.name not in wanted:
                store.drop_collection(info.name)
                out[info.name] = {"dropped": True}
    for name, entry in wanted.items():
        snapshot = folder / entry["snapshot"] if entry.get("snapshot") else None
        if isinstance(store, EdgeStore) and snapshot is not None:
            store.restore_snapshot(name, snapshot)
            how = f"{entry.get('snapshot_format')} snapshot"
        elif (isinstance(store, ServerQdrantStore) and snapshot is not None
              and entry.get("snapshot_format") == "server-shard" and store.has_collection(name)):
            server_recover(store, name, snapshot, entry["snapshot_sha256"])
            how = "server snapshot (priority=snapshot)"
        else:
            import_collection(store, name, int(entry["dimension"]), folder / entry["export"])
            how = "portable export"
        points = store.count(name)
        if points != entry["points"]:
            raise BackupError(f"collection {name} restored with {points} points, the manifest says "
                              f"{entry['points']}")
        out[name] = {"points": points, "from": how}
    return out


def import_collection(store, name: str, dimension: int, export: Path) -> int:
    if store.has_collection(name):
        store.drop_collection(name)
    store.ensure_collection(name, dimension)
    points = read_export(export)
    for start in range(0, len(points), EXPORT_BATCH):
        store.upsert(name, points[start:start + EXPORT_BATCH])
    return len(points)

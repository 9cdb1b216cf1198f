"""What survived: the durability drill's writers' ledgers checked against the recovered stack.

Per service, a ``Tally``: **acknowledged** writes, how many were **found** as acknowledged, **lost**
(acknowledged and not there, or not readable), **partial** (a document that is not all of one
version's chunks), **duplicated** (there more often than written: the APIs here promise exactly once
for an acknowledged write and at most once for one in doubt; an approval executed twice counts here),
and the writes **in doubt** and how many of them are there (either way is allowed, whole and once).
Everything is read through the services' own APIs, the SQLite files with ``sqlite3`` in read-only
mode: the harness does not trust the code it checks to report on itself.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import stack
from harness.faults.writers import (
    ACKED,
    IN_DOUBT,
    ApprovalWriter,
    AuditWriter,
    MemoryWriter,
    RagWriter,
    Write,
)
from harness.httpclient import client
from suite.settings import Settings

TIMEOUT = 60.0


@dataclass
class Tally:
    name: str  # what was written: "memory notes", "rag documents", ...
    acknowledged: int = 0
    found: int = 0
    lost: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    in_doubt: int = 0
    in_doubt_found: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.partial or self.duplicated)

    @property
    def failures(self) -> int:
        return len(self.lost) + len(self.partial) + len(self.duplicated)

    def measured(self) -> str:
        return (f"{self.acknowledged} acknowledged, {self.found} found, {len(self.lost)} lost, "
                f"{len(self.partial)} partial, {len(self.duplicated)} duplicated; {self.in_doubt} in doubt "
                f"({self.in_doubt_found} there, whole)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _get(settings: Settings, service: str, path: str, headers: dict[str, str], **params):
    return client().get(settings.url(service) + path, headers=headers, params=params or None, timeout=TIMEOUT)


# -- memory -------------------------------------------------------------------------------------------
def memory_notes(settings: Settings, writer: MemoryWriter, headers: dict[str, str]) -> Tally:
    t = Tally("memory notes")
    listed = _get(settings, "memory", "/v1/memory/notes", headers, project=writer.project, limit=500)
    listed.raise_for_status()
    texts = Counter(n["text"] for n in listed.json()["notes"])
    if sum(texts.values()) >= 500:
        t.notes.append("more than 500 notes: duplicates looked for among the newest 500")

    def lost(w: Write) -> str | None:
        resp = _get(settings, "memory", f"/v1/memory/notes/{w.detail['id']}", headers)
        if resp.status_code == 200 and resp.json()["text"] == w.key:
            return None
        return f"note {w.detail['id']} ({w.key[-40:]}): HTTP {resp.status_code}"

    return _keyed(t, writer.writes, texts, lost, "notes")


def _keyed(t: Tally, writes: list[Write], seen: Counter, lost: Callable[[Write], str | None], what: str) -> Tally:
    """Writes looked up by key: acknowledged ones found (``lost`` says why not), in-doubt ones counted
    when there, any key there more than once a duplicate."""
    for w in writes:
        if w.outcome == ACKED:
            t.acknowledged += 1
            reason = lost(w)
            if reason is None:
                t.found += 1
            else:
                t.lost.append(reason)
        elif w.outcome == IN_DOUBT:
            t.in_doubt += 1
            t.in_doubt_found += seen[w.key] > 0
        if seen[w.key] > 1:
            t.duplicated.append(f"{w.key[-40:]}: {seen[w.key]} {what}")
    return t


# -- rag ----------------------------------------------------------------------------------------------
def _version_of(doc: dict[str, Any], doc_id: str) -> tuple[int | None, str]:
    """(the version a stored document wholly is, "") or (None, why it is not one whole version)."""
    numbers, texts = doc["chunk_numbers"], doc.get("texts") or []
    if numbers != list(range(len(numbers))):
        return None, f"chunk numbers {numbers[:8]}… are not 0..{len(numbers) - 1}"
    versions = {v for text in texts for v in (1, 2) if RagWriter.token(doc_id, v) in text}
    if len(versions) != 1:
        return None, f"chunks of versions {sorted(versions)} mixed" if versions else "no version token"
    version = versions.pop()
    if f"END-{RagWriter.token(doc_id, version)}" not in texts[-1] or not texts[0].startswith("Sentence of"):
        return None, f"version {version} cut: its first or last chunk is missing"
    return version, ""


def rag_documents(settings: Settings, writer: RagWriter, headers: dict[str, str]) -> Tally:
    t = Tally("rag documents")
    by_doc: dict[str, list] = {}
    for w in writer.writes:
        by_doc.setdefault(w.detail["doc"], []).append(w)
    present_chunks = 0
    for doc_id, writes in by_doc.items():
        acked = [w for w in writes if w.outcome == ACKED]
        newest_acked = max((w.detail["version"] for w in acked), default=None)
        allowed = {w.detail["version"] for w in writes if w.outcome == IN_DOUBT
                   and (newest_acked is None or w.detail["version"] > newest_acked)}
        if newest_acked is not None:
            allowed.add(newest_acked)
            t.acknowledged += 1
        elif allowed:
            t.in_doubt += 1
        resp = _get(settings, "rag", f"/collections/{writer.collection}/documents/{doc_id}", headers)
        if resp.status_code == 404:
            if newest_acked is not None:
                t.lost.append(f"{doc_id} v{newest_acked}: not in the collection")
            continue
        resp.raise_for_status()
        doc = resp.json()
        present_chunks += doc["chunks"]
        version, why = _version_of(doc, doc_id)
        if version is None:
            t.partial.append(f"{doc_id}: {why}")
        elif version not in allowed:
            (t.lost if newest_acked is not None else t.partial).append(
                f"{doc_id}: version {version} stored, acknowledged v{newest_acked}")
        elif newest_acked is not None:
            expected = next(w.detail["chunks"] for w in reversed(acked) if w.detail["version"] == newest_acked)
            if version == newest_acked and doc["chunks"] != expected:
                t.partial.append(f"{doc_id} v{version}: {doc['chunks']} chunks, acknowledged {expected}")
            else:
                t.found += 1
        else:
            t.in_doubt_found += 1
    info = _get(settings, "rag", f"/collections/{writer.collection}", headers)
    if info.status_code == 200:
        points = info.json()["points"]
        if points != present_chunks:  # a point outside every whole document: a duplicate or a stray
            t.duplicated.append(f"collection holds {points} points, its documents {present_chunks} chunks")
    elif by_doc:
        t.notes.append(f"GET /collections/{writer.collection}: HTTP {info.status_code}")
    return t


# -- tools --------------------------------------------------------------------------------------------
def _audit(settings: Settings, headers: dict[str, str], tool: str, since: float) -> list[dict[str, Any]]:
    resp = _get(settings, "tools", "/audit", headers, tool=tool, since=since, limit=1000)
    resp.raise_for_status()
    return resp.json()["entries"]


def audit_rows(settings: Settings, writer: AuditWriter, admin: dict[str, str], since: float) -> Tally:
    t = Tally("audited tool calls")
    rows = Counter(r["request_id"] for r in _audit(settings, admin, "system_info", since))
    return _keyed(t, writer.writes, rows, lambda w: None if rows[w.key] else f"{w.key}: no audit row", "audit rows")


def approvals(settings: Settings, writer: ApprovalWriter, admin: dict[str, str], since: float) -> Tally:
    """Every acknowledged approval request still there; an acknowledged execution's effect there once;
    no approval executed twice (the file counts executions, and so does the audit)."""
    t = Tally("tool approvals")
    runs = Counter(r["approval_id"] for r in _audit(settings, admin, "edit_file", since) if r["transport"] == "approval")
    # one listing gives every file's size: "X" plus one "+" per execution (reading each file would
    # spend the admin key's per-minute tool budget)
    listing = client().post(settings.url("tools") + "/tools/list_directory", json={"path": writer.folder},
                            headers=admin, timeout=TIMEOUT)
    sizes = {e["name"]: e["size"] for e in listing.json()["result"]["entries"]} if listing.status_code == 200 else {}
    if listing.status_code != 200:
        t.notes.append(f"list_directory {writer.folder}: HTTP {listing.status_code}")
    executed_acked = 0
    for w in writer.writes:
        if w.outcome != ACKED:
            t.in_doubt += w.outcome == IN_DOUBT
            continue
        t.acknowledged += 1
        approval = w.detail["approval"]
        rec = _get(settings, "tools", f"/approvals/{approval}", admin)
        if rec.status_code != 200:
            t.lost.append(f"{approval}: HTTP {rec.status_code}")
            continue
        size = sizes.get(writer.path(w.n).rsplit("/", 1)[-1])
        ran = None if size is None else size - 1
        status = rec.json()["status"]
        if ran is None:
            t.lost.append(f"{approval}: its file is not in {writer.folder}")
        elif ran > 1 or runs[approval] > 1:
            t.duplicated.append(f"{approval}: executed {max(ran, runs[approval])} times ({status})")
        elif w.detail.get("execution") == ACKED and (ran != 1 or status != "executed"):
            t.lost.append(f"{approval}: execution acknowledged, file ran {ran}×, status {status}")
        else:
            t.found += 1
        executed_acked += w.detail.get("execution") == ACKED
    t.notes.append(f"{executed_acked} executions acknowledged; statuses: "
                   + ", ".join(f"{k} {v}" for k, v in _statuses(settings, writer, admin).items()))
    return t


def _statuses(settings: Settings, writer: ApprovalWriter, admin: dict[str, str]) -> dict[str, int]:
    ids = {w.detail["approval"] for w in writer.writes if w.outcome == ACKED}
    resp = _get(settings, "tools", "/approvals", admin, limit=1000)
    if resp.status_code != 200:
        return {}
    return dict(Counter(a["status"] for a in resp.json().get("approvals", []) if a["id"] in ids))


# -- files and stores ---------------------------------------------------------------------------------
def sqlite_integrity(settings: Settings) -> dict[str, str]:
    """``PRAGMA integrity_check`` of every suite database, opened read-only beside the running services."""
    out = {}
    for name, path in (("memory", settings.memory_db_path), ("security", settings.security_db_path),
                       ("keys", settings.key_store_path)):
        if not Path(path).is_file():
            out[name] = "missing"
            continue
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            out[name] = "; ".join(r[0] for r in conn.execute("PRAGMA integrity_check").fetchall())[:300]
        finally:
            conn.close()
    return out


def edge_shards(settings: Settings, headers: dict[str, str]) -> dict[str, str]:
    """Each collection of the vector store: described and queried (its shard opened and answers)."""
    out = {}
    listed = _get(settings, "rag", "/collections", headers)
    listed.raise_for_status()
    for coll in listed.json()["collections"]:
        name = coll["name"]
        info = _get(settings, "rag", f"/collections/{name}", headers)
        query = client().post(settings.url("rag") + "/query", headers=headers, timeout=TIMEOUT,
                              json={"collection": name, "query": "recovery after a restart", "answer": False,
                                    "top_k": 2})
        sources = query.json().get("sources", []) if query.status_code == 200 else []
        if info.status_code != 200 or query.status_code != 200 or (coll["points"] and not sources):
            out[name] = f"describe HTTP {info.status_code}, query HTTP {query.status_code}, {len(sources)} sources"
        else:
            out[name] = "ok"
    return out


def backup_sets(settings: Settings, since: float) -> dict[str, str]:
    """Every finished set in the backup dir readable, and those made since ``since`` verified whole
    (``suite backup verify``); a folder that is neither a set nor a ``.partial`` leftover is a problem."""
    proc = stack.run_suite(["backup", "list", "--json"], settings, timeout=120)
    if proc.returncode != 0:
        return {"list": f"suite backup list failed: {proc.stderr.strip()[-200:]}"}
    out = {}
    for s in json.loads(proc.stdout):
        if "error" in s:
            out[s["set"]] = s["error"][:200]
        elif float(s.get("created_ts") or 0) >= since:
            verify = stack.run_suite(["backup", "verify", s["set"]], settings, timeout=300)
            out[s["set"]] = "ok" if verify.returncode == 0 else verify.stderr.strip()[-200:]
    return out

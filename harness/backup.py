"""Backups proven by restoring: the checks of runbook 07 (each returns ``CheckResult``s).

The backup itself runs as an operator would run it — ``suite backup create`` / ``suite restore`` in a
subprocess against the stack under test (``harness.stack``) — while a ``Writer`` keeps inserting notes and indexing
documents over HTTP. Everything *about* the restored data is then checked here without the project's
code: files re-hashed with hashlib, databases opened with sqlite3 (``integrity_check``, row counts, an
FTS search), restored shards opened with qdrant-edge-py (point counts, a query embedded by the running
embedding service).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from harness import stack
from harness.httpclient import verify
from harness.keys import headers_for
from harness.result import CheckResult, Stage, Status, Timer
from suite import services
from suite.settings import Settings

STAGE = Stage.BACKUP
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
WRITER_COLLECTION = "backup_writer"
SAMPLE_QUERY = {"query": "GPU 메모리가 부족하면 어떻게 하나요?", "expect": "gpu-memory", "collection": "smoke"}


class Writer:
    """Keeps writing while a backup runs: a note per turn (phase 3) and a small document (phase 2+).
    Only writes the service acknowledged are counted."""

    def __init__(self, settings: Settings, phase: int, headers: dict[str, str] | None = None) -> None:
        self.settings, self.phase = settings, phase
        self.headers = headers if headers is not None else headers_for(settings, "developer")
        self.notes = self.docs = self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backup-writer", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=TIMEOUT, headers=self.headers, verify=verify()) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                try:
                    if self.phase >= 3:
                        r = http.post(self.settings.url("memory") + "/v1/memory/notes",
                                      json={"project": "backup-writer", "text": f"writer note {n} during backup",
                                            "tags": ["writer"]})
                        self.notes += r.status_code == 201
                    r = http.post(self.settings.url("rag") + "/index", json={
                        "collection": WRITER_COLLECTION,
                        "documents": [{"id": f"w{n}", "text": f"document {n} indexed while a backup runs",
                                       "metadata": {"lang": "en"}}]})
                    self.docs += r.status_code == 200
                except httpx.HTTPError:
                    self.errors += 1

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def _cli_json(settings: Settings, *argv: str, timeout: float = 900) -> tuple[int, Any, str]:
    proc = stack.run_suite([*argv, "--json"], settings, timeout=timeout)
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        data = None
    return proc.returncode, data, (proc.stderr or proc.stdout).strip()[-600:]


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


# -- backup under writes ----------------------------------------------------------------------------
def check_backup_under_writes(settings: Settings, phase: int, evidence_dir: Path, writer_s: float = 3.0,
                              headers: dict[str, str] | None = None) -> tuple[list[CheckResult], Path | None]:
    """``suite backup create`` while the writer runs; the manifest is kept as evidence."""
    t = Timer()
    if headers is None:  # the run's own key: the writer's notes and documents need a developer
        from harness.keys import run_keys

        headers = {"Authorization": f"Bearer {run_keys(settings).developer}"}
    with Writer(settings, phase, headers) as writer:
        time.sleep(writer_s / 2)
        rc, data, err = _cli_json(settings, "backup", "create")
        time.sleep(writer_s / 2)
    if rc != 0 or not data:
        return [CheckResult("backup.create", "Backup set taken while a writer runs", STAGE, Status.FAIL,
                            target="exit 0 and a sealed set", measured=f"exit {rc}", detail=err, **t.fields())], None
    set_path, manifest = Path(data["path"]), data["manifest"]
    evidence_dir.mkdir(parents=True, exist_ok=True)
    kept = shutil.copy2(set_path / "manifest.json", evidence_dir / f"{set_path.name}.manifest.json")
    writes = f"{writer.notes} notes and {writer.docs} documents written meanwhile ({writer.errors} errors)"
    results = [CheckResult("backup.create", "Backup set taken while a writer runs", STAGE,
                           Status.PASS if writer.docs and writer.errors == 0 else Status.WARN,
                           target="sealed set, writer never refused", measured=f"{len(manifest['files'])} files, "
                           f"{_mb(manifest['bytes'])}", evidence=[str(kept)],
                           detail=f"{set_path.name}; {writes}", **t.fields())]
    results += manifest_rows(manifest)
    return results, set_path


def manifest_rows(manifest: dict[str, Any]) -> list[CheckResult]:
    """One row per part of the set: what it holds, its files' sizes, its counts."""
    sizes: dict[str, int] = {}
    for f in manifest["files"]:
        part = f["path"].split("/", 1)[0]
        sizes[part] = sizes.get(part, 0) + f["size"]
    rows = []
    for part, entry in manifest["parts"].items():
        if part == "rag":
            counts = {c: e["points"] for c, e in entry["collections"].items()}
            what = f"{entry['store']['kind']} store, points {counts}"
        else:
            counts = entry["tables"]
            what = f"{entry['file']}: integrity {entry['integrity']}, rows {counts}"
        rows.append(CheckResult(f"backup.set.{part}", f"Set part: {part}", STAGE, Status.PASS,
                                target="in the manifest with sizes and sha256", measured=_mb(sizes.get(part, 0)),
                                detail=f"{what} ({entry.get('service')} {entry.get('version')})"))
    return rows


def check_verify(set_path: Path) -> CheckResult:
    """Every file re-hashed here (hashlib), against the manifest's size and sha256."""
    t = Timer()
    manifest = json.loads((set_path / "manifest.json").read_text())
    bad = []
    for f in manifest["files"]:
        path = set_path / f["path"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if digest != f["sha256"] or path.stat().st_size != f["size"]:
            bad.append(f["path"])
    return CheckResult("backup.verify", "Every file matches its manifest sha256", STAGE,
                       Status.FAIL if bad else Status.PASS, target="0 mismatches",
                       measured=f"{len(manifest['files']) - len(bad)}/{len(manifest['files'])} match",
                       detail=", ".join(bad), **t.fields())


# -- restore drill ----------------------------------------------------------------------------------
def check_restore_drill(settings: Settings, set_path: Path, scratch: Path) -> list[CheckResult]:
    """Restore the set into ``scratch``; counts against the manifest; a RAG query and a memory search
    on the restored copies."""
    t = Timer()
    rc, data, err = _cli_json(settings, "restore", str(set_path), "--into", str(scratch))
    restore = CheckResult("backup.drill.restore", "Newest set restored into a scratch folder", STAGE,
                          Status.PASS if rc == 0 else Status.FAIL, target="exit 0",
                          measured=f"exit {rc}", detail="" if rc == 0 else err, **t.fields())
    if rc != 0:
        return [restore]
    manifest = json.loads((set_path / "manifest.json").read_text())
    return [restore, _check_counts(manifest, scratch), _check_rag_query(settings, manifest, scratch),
            _check_memory_search(manifest, scratch)]


def _edge_count(shard_dir: Path) -> int:
    import qdrant_edge

    shard = qdrant_edge.EdgeShard.load(str(shard_dir))
    try:
        return shard.count(qdrant_edge.CountRequest(exact=True))
    finally:
        shard.close()


def _check_counts(manifest: dict[str, Any], scratch: Path) -> CheckResult:
    t = Timer()
    wrong, seen = [], []
    for part, entry in manifest["parts"].items():
        if part == "rag":
            for name, c in entry["collections"].items():
                got = _edge_count(scratch / "edge" / name / "shard")
                seen.append(f"{name}={got}")
                if got != c["points"]:
                    wrong.append(f"{name}: {got} points, manifest {c['points']}")
            continue
        db = scratch / part / Path(entry["file"]).name
        with sqlite3.connect(db) as conn:
            check = conn.execute("PRAGMA integrity_check").fetchone()[0]
            # table names come from the copy itself, never from the manifest (which is only compared)
            present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for table, rows in entry["tables"].items():
                if table not in present:
                    wrong.append(f"{part}.{table}: missing from the restored copy")
                    continue
                quoted = '"' + table.replace('"', '""') + '"'
                got = conn.execute("SELECT COUNT(*) FROM " + quoted).fetchone()[0]
                seen.append(f"{part}.{table}={got}")
                if got != rows:
                    wrong.append(f"{part}.{table}: {got} rows, manifest {rows}")
        if check != "ok":
            wrong.append(f"{part}: integrity_check {check}")
    return CheckResult("backup.drill.counts", "Restored counts and integrity equal the manifest", STAGE,
                       Status.FAIL if wrong else Status.PASS, target="every count equal, integrity ok",
                       measured=f"{len(seen) - len(wrong)}/{len(seen)} equal", detail="; ".join(wrong or seen),
                       **t.fields())


def _check_rag_query(settings: Settings, manifest: dict[str, Any], scratch: Path) -> CheckResult:
    import qdrant_edge

    t = Timer()
    collections = manifest["parts"].get("rag", {}).get("collections", {})
    name = SAMPLE_QUERY["collection"] if SAMPLE_QUERY["collection"] in collections else next(iter(collections), None)
    if name is None:
        return CheckResult.skipped("backup.drill.rag_query", "RAG query on the restored vectors", STAGE,
                                   detail="the set holds no collection", **t.fields())
    vector = httpx.post(settings.url("embedding") + "/embed", json={"texts": [SAMPLE_QUERY["query"]]},
                        verify=verify(settings),
                        timeout=TIMEOUT, headers=headers_for(settings, "guest")).json()["embeddings"][0]
    shard = qdrant_edge.EdgeShard.load(str(scratch / "edge" / name / "shard"))
    try:
        hits = shard.query(qdrant_edge.QueryRequest(limit=3, query=qdrant_edge.Query.Nearest(vector),
                                                    with_payload=True))
    finally:
        shard.close()
    top = [h.payload.get("doc_id") for h in hits]
    want = SAMPLE_QUERY["expect"] if name == SAMPLE_QUERY["collection"] else None
    ok = bool(top) and (want is None or top[0] == want)
    return CheckResult("backup.drill.rag_query", "RAG query on the restored vectors ranks the expected source",
                       STAGE, Status.PASS if ok else Status.FAIL, target=f"top source {want or 'any'}",
                       measured=", ".join(map(str, top)), detail=f"'{SAMPLE_QUERY['query']}' in {name}", **t.fields())


def _check_memory_search(manifest: dict[str, Any], scratch: Path) -> CheckResult:
    t = Timer()
    entry = manifest["parts"].get("memory")
    if entry is None:
        return CheckResult.skipped("backup.drill.memory_search", "Memory search on the restored database",
                                   STAGE, detail="the set holds no memory database", **t.fields())
    with sqlite3.connect(scratch / "memory" / Path(entry["file"]).name) as conn:
        found = conn.execute("SELECT COUNT(*) FROM notes_fts WHERE notes_fts MATCH 'writer OR smoke OR note'"
                             ).fetchone()[0]
    notes = entry["tables"].get("notes", 0)
    return CheckResult("backup.drill.memory_search", "Memory full-text search on the restored database", STAGE,
                       Status.PASS if found or not notes else Status.FAIL, target="finds notes when there are notes",
                       measured=f"{found} hits of {notes} notes", **t.fields())


def check_tampered_set_refused(settings: Settings, set_path: Path) -> CheckResult:
    """A copy of the set with one byte flipped in its largest file must be refused whole."""
    t = Timer()
    with tempfile.TemporaryDirectory(prefix="tampered-") as tmp:
        copy = Path(tmp) / set_path.name
        shutil.copytree(set_path, copy)
        victim = max((p for p in copy.rglob("*") if p.is_file() and p.name != "manifest.json"),
                     key=lambda p: p.stat().st_size)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
        scratch = Path(tmp) / "scratch"
        rc, _, err = _cli_json(settings, "restore", str(copy), "--into", str(scratch))
        refused = rc == 2 and not scratch.exists()
        rel = victim.relative_to(copy)
    return CheckResult("backup.drill.tamper", "One flipped byte: the set is refused, nothing restored", STAGE,
                       Status.PASS if refused else Status.FAIL, target="exit 2, scratch untouched",
                       measured=f"exit {rc}, scratch {'absent' if not scratch.exists() else 'WRITTEN'}",
                       detail=f"flipped a byte in {rel}: {err[-200:]}", **t.fields())


# -- retention and rollback -------------------------------------------------------------------------
def check_retention(settings: Settings, keep_last: int, keep_days: float) -> CheckResult:
    """Retention applied; what stays is recomputed here from the manifests and must match exactly."""
    t = Timer()
    root = settings.backup_dir
    before = {p.name: json.loads((p / "manifest.json").read_text()).get("created_ts", 0)
              for p in root.iterdir() if (p / "manifest.json").is_file() and not p.name.endswith(".partial")}
    rc, data, err = _cli_json(settings, "backup", "prune", "--keep-last", str(keep_last),
                              "--keep-days", str(keep_days))
    now = time.time()
    newest = set(sorted(before, key=before.get)[-keep_last:])
    expected = sorted(n for n, ts in before.items() if n in newest or now - ts < keep_days * 86400)
    left = sorted(p.name for p in root.iterdir()  # a killed backup's `.partial` is no set, manifest or not
                  if (p / "manifest.json").is_file() and not p.name.endswith(".partial"))
    ok = rc == 0 and left == expected
    return CheckResult("backup.retention", f"Retention keeps the newest {keep_last} and sets younger than "
                       f"{keep_days} days", STAGE, Status.PASS if ok else Status.FAIL,
                       target=f"{len(expected)} kept", measured=f"{len(left)} kept, "
                       f"{len((data or {}).get('removed', []))} removed", detail=err if rc else "", **t.fields())


def rollback_decision(rollback: str, started: list[str], phase: int) -> CheckResult | None:
    """None when the runbook should roll the live stack back; else the ``skip`` that says why not.

    ``auto`` rolls back only a stack this run started itself: a rollback restores a set taken a minute
    earlier, and on a stack others use, their writes since then would be lost."""
    choice = rollback.strip().lower()
    if choice not in ("auto", "true", "false"):
        raise ValueError(f"rollback must be auto, true or false (got {rollback!r})")
    affected = [s for s in ("rag", "memory", "tools") if phase >= (2 if s == "rag" else 3)]
    if choice == "true" or (choice == "auto" and set(affected) <= set(started)):
        return None
    why = ("-p rollback=false" if choice == "false" else
           f"rollback=auto and this run did not start {', '.join(s for s in affected if s not in started)} "
           "(a rollback would lose writes made since the set by whoever runs them); -p rollback=true drills it anyway")
    return CheckResult.skipped("backup.rollback", "Rollback to the new set (safety backup first)", STAGE,
                               target="RTO and RPO measured", measured="not run", detail=why)


def check_rollback(settings: Settings, set_path: Path, rto_target_s: float, rpo_target_s: float) -> list[CheckResult]:
    """``suite restore SET`` on the live stack: RTO (stop → ready) and RPO (age of the set)."""
    t = Timer()
    rc, data, err = _cli_json(settings, "restore", str(set_path), timeout=1800)
    if not data:
        return [CheckResult("backup.rollback", "Rollback to the set", STAGE, Status.FAIL, target="restored",
                            measured=f"exit {rc}", detail=err, **t.fields())]
    restored = data["outcome"] == "restored"
    results = [CheckResult("backup.rollback", "Rollback: safety backup, stop, restore, start, healthy", STAGE,
                           Status.PASS if restored else Status.FAIL, target="restored and healthy",
                           measured=data["outcome"], detail=f"safety backup {data['safety_set']}; services "
                           f"{', '.join(data['services'])}" + (f"; {data.get('error')}" if not restored else ""),
                           **t.fields()),
               CheckResult("backup.rto", "RTO: services stopped until ready again", STAGE,
                           Status.PASS if data["rto_s"] <= rto_target_s else Status.FAIL,
                           target=f"≤ {rto_target_s:g} s", measured=f"{data['rto_s']} s"),
               CheckResult("backup.rpo", "RPO: age of the restored set", STAGE,
                           Status.PASS if data["rpo_s"] <= rpo_target_s else Status.FAIL,
                           target=f"≤ {rpo_target_s:g} s", measured=f"{data['rpo_s']} s")]
    return results


def below_phase(phase: int) -> CheckResult | None:
    """The drill's ``skip`` on a stack without the rag service (whose store it backs up), else None."""
    return CheckResult.below_phase(phase, services.get("rag").phase, "backup",
                                   "Backup and restore drill (needs the rag service)", Stage.BACKUP)


def not_applicable(target) -> CheckResult:
    """The backup drill on a target file's stack: the backup sets are the suite's own (``suite backup``)."""
    part = target.vector_store or target.memory
    why = (f"not applicable: the drill backs up and restores the suite's own stores (`suite backup`); target "
           f"{target.name} has no suite store" + (f" ({part.name} is {part.kind}: its snapshots are its owner's "
                                                 "to drill)" if part is not None else ""))
    return CheckResult.skipped("backup", "Backup and restore drill", Stage.BACKUP, measured="not applicable",
                       detail=why)

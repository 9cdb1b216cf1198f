"""RAG smoke checks (phase 2): index the smoke documents, re-index without duplicates, and query in
Korean and English (the expected source must come back first)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from harness.result import CheckResult, Status, Timer
from harness.smoke.http import (
    elapsed_ms,
    error_text,
    failed,
    get,
    post_json,
    post_ok,
    result,
    run_key,
    skip_below,
)
from suite import services
from suite.settings import Settings, project_root

PHASE = services.get("rag").phase  # the stack phase that starts the rag service
DEFAULT_DATA = project_root() / "runbooks" / "data" / "smoke_docs.json"


def load_data(path: str | Path | None = None) -> dict[str, Any]:
    """The smoke document set: ``{"collection", "documents": [...], "queries": [...]}``."""
    data = json.loads(Path(path or DEFAULT_DATA).read_text(encoding="utf-8"))
    for key in ("collection", "documents", "queries"):
        if key not in data:
            raise ValueError(f"smoke data {path or DEFAULT_DATA} lacks '{key}'")
    return data


def check_index(settings: Settings, data: dict[str, Any], phase: int) -> CheckResult:
    """``POST /index`` of the smoke documents; every chunk must land in the collection."""
    cid, title = "smoke.rag.index", f"index {len(data['documents'])} documents into '{data['collection']}'"
    if skipped := skip_below(phase, PHASE, cid, title):
        return skipped
    t = Timer()
    body, ms, bad = post_ok(cid, title, t, "HTTP 200", settings.url("rag") + "/index",
                                  {"collection": data["collection"], "documents": data["documents"]},
                                  run_key(settings))
    if bad:
        return bad
    ok = body["documents"] == len(data["documents"]) and body["chunks"] >= body["documents"]
    return result(cid, title, ok, t, target="every document chunked and stored", value=ms, unit="ms",
                  detail=f"{body['documents']} documents, {body['chunks']} chunks, "
                         f"{body['points_in_collection']} points in the collection, "
                         f"embedding {body['timings_ms']['embed']} ms")


def check_reindex(settings: Settings, data: dict[str, Any], phase: int) -> CheckResult:
    """Indexing the same documents again must replace them: the point count stays the same."""
    cid, title, target = "smoke.rag.reindex", "re-indexing replaces, never duplicates", "same point count"
    if skipped := skip_below(phase, PHASE, cid, title):
        return skipped
    t = Timer()
    try:
        key = run_key(settings)
        before = get(f"{settings.url('rag')}/collections/{data['collection']}", key)
        resp = post_json(settings.url("rag") + "/index",
                         {"collection": data["collection"], "documents": data["documents"]}, key)
    except httpx.HTTPError as exc:
        return failed(cid, title, t, exc, target)
    ms = elapsed_ms(t)
    if before.status_code != 200 or resp.status_code != 200:
        bad = before if before.status_code != 200 else resp
        return result(cid, title, Status.FAIL, t, target=target, value=ms, unit="ms",
                      detail=f"HTTP {bad.status_code}: {error_text(bad)}")
    n_before, n_after = before.json()["points"], resp.json()["points_in_collection"]
    return result(cid, title, n_before == n_after, t, target=target, value=ms, unit="ms",
                  detail=f"points before {n_before}, after {n_after}")


def check_query(settings: Settings, collection: str, query: str, expect: str, phase: int, *,
                check_id: str = "smoke.rag.query", top_k: int = 3, answer: bool = True) -> CheckResult:
    """``POST /query``: pass when ``expect`` is the first source, warn when lower in the top k."""
    title = f"query: {query}"
    if skipped := skip_below(phase, PHASE, check_id, title):
        return skipped
    t = Timer()
    target = f"source '{expect}' ranked first" + (", non-empty answer" if answer else "")
    body, ms, bad = post_ok(check_id, title, t, target, settings.url("rag") + "/query",
                                  {"collection": collection, "query": query, "top_k": top_k, "answer": answer},
                                  run_key(settings, "guest"))
    if bad:
        return bad
    ids = [s["doc_id"] for s in body["sources"]]
    rank = ids.index(expect) + 1 if expect in ids else None
    status = Status.PASS if rank == 1 else (Status.WARN if rank else Status.FAIL)
    if answer and not (body.get("answer") or "").strip() and status is Status.PASS:
        status = Status.WARN
    scores = ", ".join(f"{s['doc_id']} {s['score']:.3f}" for s in body["sources"])
    detail = f"rank of '{expect}': {rank or 'not retrieved'}; sources: {scores}"
    if answer:
        detail += f"; answer ({body['timings_ms']['answer']:.0f} ms): {(body.get('answer') or '')[:160]!r}"
    return result(check_id, title, status, t, target=target, value=ms, unit="ms", detail=detail)


def check_queries(settings: Settings, data: dict[str, Any], phase: int) -> list[CheckResult]:
    """Every query of the smoke data; ``"answer": true`` queries also get an answer from the gateway."""
    return [check_query(settings, data["collection"], q["query"], q["expect"], phase,
                        check_id=f"smoke.rag.query.{i}.{q.get('lang', 'xx')}", answer=bool(q.get("answer")))
            for i, q in enumerate(data["queries"], 1)]

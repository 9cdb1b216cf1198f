"""RAG smoke checks (phase 2): index the smoke documents, re-index without duplicates, and query in
Korean and English (the expected source must come back first)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.result import CheckResult, Status
from harness.smoke.http import (
    Check,
    elapsed_ms,
    error_text,
    get,
    post_json,
    run_key,
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
    def body(c: Check) -> CheckResult:
        answer, ms, bad = c.post_ok(settings.url("rag") + "/index",
                                    {"collection": data["collection"], "documents": data["documents"]},
                                    run_key(settings))
        if bad:
            return bad
        ok = answer["documents"] == len(data["documents"]) and answer["chunks"] >= answer["documents"]
        return c.result(ok, target="every document chunked and stored", value=ms, unit="ms",
                        detail=f"{answer['documents']} documents, {answer['chunks']} chunks, "
                               f"{answer['points_in_collection']} points in the collection, "
                               f"embedding {answer['timings_ms']['embed']} ms")

    return Check("smoke.rag.index", f"index {len(data['documents'])} documents into '{data['collection']}'",
                 "HTTP 200", PHASE).run(phase, body)


def check_reindex(settings: Settings, data: dict[str, Any], phase: int) -> CheckResult:
    """Indexing the same documents again must replace them: the point count stays the same."""
    def body(c: Check) -> CheckResult:
        key = run_key(settings)
        before = get(f"{settings.url('rag')}/collections/{data['collection']}", key)
        resp = post_json(settings.url("rag") + "/index",
                         {"collection": data["collection"], "documents": data["documents"]}, key)
        ms = elapsed_ms(c.timer)
        if before.status_code != 200 or resp.status_code != 200:
            bad = before if before.status_code != 200 else resp
            return c.result(Status.FAIL, value=ms, unit="ms", detail=f"HTTP {bad.status_code}: {error_text(bad)}")
        n_before, n_after = before.json()["points"], resp.json()["points_in_collection"]
        return c.result(n_before == n_after, value=ms, unit="ms", detail=f"points before {n_before}, after {n_after}")

    return Check("smoke.rag.reindex", "re-indexing replaces, never duplicates", "same point count",
                 PHASE).run(phase, body)


def check_query(settings: Settings, collection: str, query: str, expect: str, phase: int, *,
                check_id: str = "smoke.rag.query", top_k: int = 3, answer: bool = True) -> CheckResult:
    """``POST /query``: pass when ``expect`` is the first source, warn when lower in the top k."""
    def body(c: Check) -> CheckResult:
        got, ms, bad = c.post_ok(settings.url("rag") + "/query",
                                 {"collection": collection, "query": query, "top_k": top_k, "answer": answer},
                                 run_key(settings, "guest"))
        if bad:
            return bad
        ids = [s["doc_id"] for s in got["sources"]]
        rank = ids.index(expect) + 1 if expect in ids else None
        status = Status.PASS if rank == 1 else (Status.WARN if rank else Status.FAIL)
        if answer and not (got.get("answer") or "").strip() and status is Status.PASS:
            status = Status.WARN
        scores = ", ".join(f"{s['doc_id']} {s['score']:.3f}" for s in got["sources"])
        detail = f"rank of '{expect}': {rank or 'not retrieved'}; sources: {scores}"
        if answer:
            detail += f"; answer ({got['timings_ms']['answer']:.0f} ms): {(got.get('answer') or '')[:160]!r}"
        return c.result(status, value=ms, unit="ms", detail=detail)

    target = f"source '{expect}' ranked first" + (", non-empty answer" if answer else "")
    return Check(check_id, f"query: {query}", target, PHASE).run(phase, body)


def check_queries(settings: Settings, data: dict[str, Any], phase: int) -> list[CheckResult]:
    """Every query of the smoke data; ``"answer": true`` queries also get an answer from the gateway."""
    return [check_query(settings, data["collection"], q["query"], q["expect"], phase,
                        check_id=f"smoke.rag.query.{i}.{q.get('lang', 'xx')}", answer=bool(q.get("answer")))
            for i, q in enumerate(data["queries"], 1)]

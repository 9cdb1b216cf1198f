"""Smoke checks: one functional request per capability, each a ``CheckResult`` with its latency.

RAG index and query (Korean and English, the expected source must come back), embeddings (shape and
cosine sanity, native and OpenAI-shaped through the gateway), a chat and a code completion through
the gateway, and a forced failover (chat upstream stopped with the supervisor, the gateway answers
from code, then chat is restored). Everything talks HTTP to ``settings.url(...)``; steps that need
phase-2 services are recorded as ``skip`` when the run is phase 1.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx

from harness.result import CheckResult, Status, Timer
from suite.settings import Settings, project_root

PHASE = "smoke"
DEFAULT_DATA = project_root() / "runbooks" / "data" / "smoke_docs.json"
TIMEOUT = httpx.Timeout(180.0, connect=5.0)
EMBED_PAIR = ("A cat is sitting on the mat.", "A kitten sits on a rug.")


def load_data(path: str | Path | None = None) -> dict[str, Any]:
    """The smoke document set: ``{"collection", "documents": [...], "queries": [...]}``."""
    data = json.loads(Path(path or DEFAULT_DATA).read_text(encoding="utf-8"))
    for key in ("collection", "documents", "queries"):
        if key not in data:
            raise ValueError(f"smoke data {path or DEFAULT_DATA} lacks '{key}'")
    return data


def _ms(t: Timer) -> str:
    return f"{t.stop() * 1000:.1f} ms"


def _result(check_id: str, title: str, status: str, t: Timer, **fields: Any) -> CheckResult:
    fields.setdefault("measured", _ms(t))
    return CheckResult(check_id, title, PHASE, status, **t.fields(), **fields)


def skip_below(phase: int, needed: int, check_id: str, title: str) -> CheckResult | None:
    """A ``skip`` result when the run's phase lacks the services a check needs, else None."""
    if phase >= needed:
        return None
    return CheckResult(check_id, title, PHASE, Status.SKIP, target=f"phase >= {needed}",
                       measured="not run",
                       detail=f"phase {phase} run: this check needs the services of phase {needed}")


def error_text(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def post_json(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url, json=body, timeout=TIMEOUT)


def _post_ok(cid: str, title: str, t: Timer, target: str, url: str,
             body: dict[str, Any]) -> tuple[dict[str, Any], str, CheckResult | None]:
    """POST and read the JSON answer; on a transport error or a non-200 answer, the failed result."""
    try:
        resp = post_json(url, body)
    except httpx.HTTPError as exc:
        return {}, "", _result(cid, title, "fail", t, target=target, detail=f"{type(exc).__name__}: {exc}")
    measured = _ms(t)
    if resp.status_code != 200:
        return {}, measured, _result(cid, title, "fail", t, target=target, measured=measured,
                                     detail=f"HTTP {resp.status_code}: {error_text(resp)}")
    return resp.json(), measured, None


# -- RAG ------------------------------------------------------------------------------------------
def check_index(settings: Settings, data: dict[str, Any], phase: int = 2) -> CheckResult:
    """``POST /index`` of the smoke documents; every chunk must land in the collection."""
    cid, title = "smoke.rag.index", f"index {len(data['documents'])} documents into '{data['collection']}'"
    if skipped := skip_below(phase, 2, cid, title):
        return skipped
    t = Timer()
    body, measured, failed = _post_ok(cid, title, t, "HTTP 200", settings.url("rag") + "/index",
                                      {"collection": data["collection"], "documents": data["documents"]})
    if failed:
        return failed
    ok = body["documents"] == len(data["documents"]) and body["chunks"] >= body["documents"]
    return _result(cid, title, "pass" if ok else "fail", t, target="every document chunked and stored",
                   measured=measured,
                   detail=f"{body['documents']} documents, {body['chunks']} chunks, "
                          f"{body['points_in_collection']} points in the collection, "
                          f"embedding {body['timings_ms']['embed']} ms")


def check_reindex(settings: Settings, data: dict[str, Any], phase: int = 2) -> CheckResult:
    """Indexing the same documents again must replace them: the point count stays the same."""
    cid, title = "smoke.rag.reindex", "re-indexing replaces, never duplicates"
    if skipped := skip_below(phase, 2, cid, title):
        return skipped
    t = Timer()
    try:
        before = httpx.get(f"{settings.url('rag')}/collections/{data['collection']}", timeout=TIMEOUT)
        resp = post_json(settings.url("rag") + "/index",
                     {"collection": data["collection"], "documents": data["documents"]})
    except httpx.HTTPError as exc:
        return _result(cid, title, "fail", t, target="same point count",
                       detail=f"{type(exc).__name__}: {exc}")
    measured = _ms(t)
    if before.status_code != 200 or resp.status_code != 200:
        bad = before if before.status_code != 200 else resp
        return _result(cid, title, "fail", t, target="same point count", measured=measured,
                       detail=f"HTTP {bad.status_code}: {error_text(bad)}")
    n_before, n_after = before.json()["points"], resp.json()["points_in_collection"]
    return _result(cid, title, "pass" if n_before == n_after else "fail", t, target="same point count",
                   measured=measured, detail=f"points before {n_before}, after {n_after}")


def check_query(settings: Settings, collection: str, query: str, expect: str, *, phase: int = 2,
                check_id: str = "smoke.rag.query", top_k: int = 3, answer: bool = True) -> CheckResult:
    """``POST /query``: pass when ``expect`` is the first source, warn when lower in the top k."""
    title = f"query: {query}"
    if skipped := skip_below(phase, 2, check_id, title):
        return skipped
    t = Timer()
    target = f"source '{expect}' ranked first" + (", non-empty answer" if answer else "")
    body, measured, failed = _post_ok(check_id, title, t, target, settings.url("rag") + "/query",
                                      {"collection": collection, "query": query, "top_k": top_k,
                                       "answer": answer})
    if failed:
        return failed
    ids = [s["doc_id"] for s in body["sources"]]
    rank = ids.index(expect) + 1 if expect in ids else None
    status = "pass" if rank == 1 else ("warn" if rank else "fail")
    if answer and not (body.get("answer") or "").strip() and status == "pass":
        status = "warn"
    scores = ", ".join(f"{s['doc_id']} {s['score']:.3f}" for s in body["sources"])
    detail = f"rank of '{expect}': {rank or 'not retrieved'}; sources: {scores}"
    if answer:
        detail += f"; answer ({body['timings_ms']['answer']:.0f} ms): {(body.get('answer') or '')[:160]!r}"
    return _result(check_id, title, status, t, target=target, measured=measured, detail=detail)


def check_queries(settings: Settings, data: dict[str, Any], phase: int = 2) -> list[CheckResult]:
    """Every query of the smoke data; ``"answer": true`` queries also get an answer from the gateway."""
    return [check_query(settings, data["collection"], q["query"], q["expect"], phase=phase,
                        check_id=f"smoke.rag.query.{i}.{q.get('lang', 'xx')}", answer=bool(q.get("answer")))
            for i, q in enumerate(data["queries"], 1)]


# -- embeddings -----------------------------------------------------------------------------------
def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def check_embed(settings: Settings, phase: int = 2, dimension: int = 384,
                min_cosine: float = 0.5) -> CheckResult:
    """``POST /embed`` of two related texts: shape, unit length and a cosine that says 'related'."""
    cid, title = "smoke.embed.pair", "embed two texts: dimension and cosine"
    if skipped := skip_below(phase, 2, cid, title):
        return skipped
    target = f"2 x {dimension} dims, unit length, {min_cosine} < cosine < 0.999"
    t = Timer()
    body, measured, failed = _post_ok(cid, title, t, target, settings.url("embedding") + "/embed",
                                      {"texts": list(EMBED_PAIR)})
    if failed:
        return failed
    vecs = body["embeddings"]
    dims = [len(v) for v in vecs]
    norms = [math.sqrt(sum(x * x for x in v)) for v in vecs]
    cos = cosine(vecs[0], vecs[1]) if len(vecs) == 2 and all(norms) else float("nan")
    ok = dims == [dimension, dimension] and all(abs(n - 1) < 0.01 for n in norms) and min_cosine < cos < 0.999
    return _result(cid, title, "pass" if ok else "fail", t, target=target, measured=measured,
                   detail=f"dims {dims}, norms {[round(n, 4) for n in norms]}, cosine {cos:.3f}")


def check_openai_embeddings(settings: Settings, phase: int = 2, dimension: int = 384) -> CheckResult:
    """``/v1/embeddings`` through the gateway, in the OpenAI shape (what the ``openai`` client sends)."""
    cid, title = "smoke.embed.openai", "OpenAI /v1/embeddings through the gateway"
    if skipped := skip_below(phase, 2, cid, title):
        return skipped
    target = f"object=list, 1 x {dimension} dims"
    t = Timer()
    body, measured, failed = _post_ok(cid, title, t, target, settings.url("gateway") + "/v1/embeddings",
                                      {"model": "embedding", "input": "안녕하세요"})
    if failed:
        return failed
    dims = [len(d["embedding"]) for d in body.get("data", [])]
    ok = body.get("object") == "list" and dims == [dimension]
    return _result(cid, title, "pass" if ok else "fail", t, target=target, measured=measured,
                   detail=f"model {body.get('model')}, dims {dims}, usage {body.get('usage')}")


# -- gateway --------------------------------------------------------------------------------------
def _completion(settings: Settings, path: str, body: dict[str, Any]) -> tuple[httpx.Response | None, str]:
    try:
        return post_json(settings.url("gateway") + path, body), ""
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _text_of(body: dict[str, Any]) -> str:
    choice = (body.get("choices") or [{}])[0]
    return (choice.get("message") or {}).get("content") or choice.get("text") or ""


def check_chat(settings: Settings, max_tokens: int = 16) -> CheckResult:
    """A chat completion through the gateway (model alias ``chat``)."""
    cid, title = "smoke.gateway.chat", "chat completion through the gateway"
    t = Timer()
    resp, err = _completion(settings, "/v1/chat/completions", {
        "model": "chat", "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": max_tokens, "temperature": 0.0})
    return _completion_result(cid, title, t, resp, err, expect_upstream="chat")


def check_code(settings: Settings, max_tokens: int = 16) -> CheckResult:
    """A code completion through the gateway (model alias ``code``, ``/v1/completions``)."""
    cid, title = "smoke.gateway.code", "code completion through the gateway"
    t = Timer()
    resp, err = _completion(settings, "/v1/completions", {
        "model": "code", "prompt": "def add(a, b):\n    return", "max_tokens": max_tokens,
        "temperature": 0.0})
    return _completion_result(cid, title, t, resp, err, expect_upstream="code")


def _completion_result(cid: str, title: str, t: Timer, resp: httpx.Response | None, err: str,
                       expect_upstream: str) -> CheckResult:
    target = f"HTTP 200, text, served by '{expect_upstream}'"
    if resp is None:
        return _result(cid, title, "fail", t, target=target, detail=err)
    measured = _ms(t)
    if resp.status_code != 200:
        return _result(cid, title, "fail", t, target=target, measured=measured,
                       detail=f"HTTP {resp.status_code}: {error_text(resp)}")
    text = _text_of(resp.json())
    upstream = resp.headers.get("x-suite-upstream")
    # A fallback still answers, but the model asked for did not: worth a warning, not a failure.
    status = "pass" if text.strip() and upstream == expect_upstream else ("warn" if text.strip() else "fail")
    return _result(cid, title, status, t, target=target, measured=measured,
                   detail=f"upstream {upstream}, text {text.strip()[:120]!r}")


def check_failover(settings: Settings, phase: int, backend: Any = None) -> list[CheckResult]:
    """Stop ``inference-chat``, ask the gateway for ``chat`` (it must answer from code, marked with
    ``x-suite-fallback-from: chat``), then bring the phase back up. Two results: failover, restore."""
    from suite.supervisor import get_backend

    backend = backend or get_backend(settings)
    cid, title = "smoke.gateway.failover", "chat upstream stopped: gateway answers via code"
    t = Timer()
    stopped = backend.down(["inference-chat"])
    if "inference-chat" not in stopped:
        return [CheckResult(cid, title, PHASE, Status.SKIP, target="x-suite-fallback-from: chat",
                            measured="not run", **t.fields(),
                            detail=f"inference-chat is not running under the {settings.backend} backend "
                                   f"with data dir {settings.data_dir}; nothing to stop")]
    try:
        t_req = Timer()
        resp, err = _completion(settings, "/v1/chat/completions", {
            "model": "chat", "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8, "temperature": 0.0})
        measured = _ms(t_req)
        target = "HTTP 200 from code, x-suite-fallback-from: chat"
        if resp is None:
            failover = _result(cid, title, "fail", t, target=target, measured=measured, detail=err)
        else:
            fallback = resp.headers.get("x-suite-fallback-from")
            upstream = resp.headers.get("x-suite-upstream")
            ok = resp.status_code == 200 and fallback == "chat" and upstream == "code"
            failover = _result(cid, title, "pass" if ok else "fail", t, target=target, measured=measured,
                               detail=f"HTTP {resp.status_code}, upstream {upstream}, "
                                      f"fallback-from {fallback}"
                                      + ("" if resp.status_code == 200 else f": {error_text(resp)}"))
    finally:
        restore = _restore(settings, backend, phase)
    return [failover, restore]


def _restore(settings: Settings, backend: Any, phase: int) -> CheckResult:
    cid, title = "smoke.gateway.restore", "chat upstream restored"
    t = Timer()
    try:
        started = backend.up(phase)
        ready = httpx.get(settings.url("inference-chat") + "/ready", timeout=TIMEOUT)
    except Exception as exc:  # a failed restore is a result to report, and later steps still run
        return _result(cid, title, "fail", t, target="inference-chat ready again",
                       detail=f"{type(exc).__name__}: {str(exc)[:300]}")
    return _result(cid, title, "pass" if ready.status_code == 200 else "fail", t,
                   target="inference-chat ready again", measured=f"{t.stop():.1f} s",
                   detail=f"started {', '.join(started) or 'nothing'}; /ready HTTP {ready.status_code}")


def run_smoke(settings: Settings, phase: int, data_file: str | Path | None = None,
              failover: bool = True) -> list[CheckResult]:
    """Every smoke check in runbook order (what ``03_smoke.ipynb`` runs cell by cell)."""
    data = load_data(data_file)
    results = [check_index(settings, data, phase), check_reindex(settings, data, phase)]
    results += check_queries(settings, data, phase)
    results += [check_embed(settings, phase), check_openai_embeddings(settings, phase),
                check_chat(settings), check_code(settings)]
    if failover:
        results += check_failover(settings, phase)
    return results



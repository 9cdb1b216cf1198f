"""The RAG service in a real phase-2 stack: real MiniLM, real embedded Qdrant (Edge), real gateway and Gemma.

Tests run in file order; the last ones stop dependencies on purpose (gateway, then embedding).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from suite.supervisor.process import ProcessBackend
from suite.testing import auth, stack_keys

pytestmark = pytest.mark.integration

DATA_FILE = Path(__file__).parents[1] / "runbooks" / "data" / "smoke_docs.json"
DATA = json.loads(DATA_FILE.read_text(encoding="utf-8"))
COLLECTION = "rag_test"
TIMEOUT = 300


def post(settings, path: str, body: dict) -> httpx.Response:
    """A developer's call (indexing needs one; querying would do with a guest)."""
    return httpx.post(settings.url("rag") + path, json=body, timeout=TIMEOUT, headers=auth(settings, "developer"))


def sources(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [s["doc_id"] for s in response.json()["sources"]]


def test_health_shows_each_dependency(phase2):
    deps = httpx.get(phase2.url("rag") + "/health").json()["dependencies"]
    assert deps["embedding"]["state"] == "up" and deps["gateway"]["state"] == "up"
    assert deps["vector_store"]["kind"] == "edge" and deps["vector_store"]["state"] == "open"
    assert httpx.get(phase2.url("rag") + "/ready", timeout=60).status_code == 200


def test_index_creates_the_collection(phase2):
    r = post(phase2, "/index", {"collection": COLLECTION, "documents": DATA["documents"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["created"] is True and body["documents"] == len(DATA["documents"])
    assert body["points_in_collection"] == body["chunks"] >= len(DATA["documents"])
    listed = httpx.get(phase2.url("rag") + "/collections", headers=auth(phase2, "guest")).json()
    listed = {c["name"]: c for c in listed["collections"]}
    assert listed[COLLECTION]["points"] == body["chunks"] and listed[COLLECTION]["dimension"] == 384
    assert listed[COLLECTION]["index"]["hnsw"] == "current"  # a handful of chunks: searched exactly


@pytest.mark.parametrize("q", DATA["queries"], ids=[f"{q['lang']}-{q['expect']}" for q in DATA["queries"]])
def test_queries_in_korean_and_english_retrieve_the_right_source(phase2, q):
    r = post(phase2, "/query", {"collection": COLLECTION, "query": q["query"], "top_k": 3, "answer": False})
    assert sources(r)[0] == q["expect"]


def test_korean_query_is_answered_with_sources(phase2):
    r = post(phase2, "/query", {"collection": COLLECTION, "query": "GPU 메모리가 부족하면 어떻게 하나요?", "top_k": 2})
    body = r.json()
    assert sources(r)[0] == "gpu-memory"
    assert isinstance(body["answer"], str) and body["answer"].strip()
    assert body["answered_by"]["upstream"] in ("chat", "code")
    top = body["sources"][0]
    assert "GPU 메모리" in top["text"] and 0 < top["score"] <= 1 and top["metadata"]["lang"] == "ko"


def test_metadata_filter_narrows_the_sources_and_a_bad_one_is_400(phase2):
    body = {"collection": COLLECTION, "query": "GPU memory", "top_k": 5, "answer": False}
    langs = {s["metadata"].get("lang") for s in post(phase2, "/query", body).json()["sources"]}
    assert len(langs) > 1
    ko = post(phase2, "/query", {**body, "filter": {"lang": "ko"}}).json()["sources"]
    assert ko and {s["metadata"]["lang"] for s in ko} == {"ko"}
    bad = post(phase2, "/query", {**body, "filter": {"a.b": "x"}})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_filter"


def test_reindexing_replaces_and_never_duplicates(phase2):
    before = httpx.get(f"{phase2.url('rag')}/collections/{COLLECTION}", headers=auth(phase2, "guest")).json()["points"]
    r = post(phase2, "/index", {"collection": COLLECTION, "documents": DATA["documents"]})
    assert r.json()["created"] is False and r.json()["points_in_collection"] == before
    long_doc = {"id": "long", "text": " ".join(f"sentence number {i} about indexing." for i in range(200))}
    long_count = post(phase2, "/index", {"collection": COLLECTION, "documents": [long_doc]}).json()
    assert long_count["chunks"] > 1 and long_count["points_in_collection"] == before + long_count["chunks"]
    short = post(phase2, "/index", {"collection": COLLECTION,
                                    "documents": [{"id": "long", "text": "now one chunk"}]}).json()
    assert short["points_in_collection"] == before + 1  # the old chunks of "long" are gone


def test_folder_outside_allowed_dirs_is_refused(phase2, tmp_path):
    r = post(phase2, "/index", {"collection": COLLECTION, "folder": str(tmp_path)})
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_folder"


def test_unknown_collection_is_404(phase2):
    r = post(phase2, "/query", {"collection": "does-not-exist", "query": "x"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("service", ["embedding", "gateway"])
def test_openai_embeddings_direct_and_through_the_gateway(phase2, service):
    from openai import OpenAI

    client = OpenAI(base_url=phase2.url(service) + "/v1", api_key=stack_keys(phase2)["guest"])
    out = client.embeddings.create(model="all-MiniLM-L6-v2", input=["안녕하세요", "hello"])
    assert [len(d.embedding) for d in out.data] == [384, 384]


def test_a_killed_embedding_comes_back_and_rag_is_ready_again_without_a_restart(phase2):
    backend = ProcessBackend(phase2)
    before = {s.name: s for s in backend.status()}
    os.kill(before["embedding"].pid, signal.SIGKILL)
    saw_not_ready, deadline = False, time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "rag did not become ready again"
        if httpx.get(phase2.url("rag") + "/ready", timeout=30).status_code == 200:
            if saw_not_ready:
                break
        else:
            saw_not_ready = True
        time.sleep(0.3)
    after = {s.name: s for s in backend.status()}
    assert after["embedding"].pid != before["embedding"].pid and after["embedding"].restarts == 1
    assert after["embedding"].last_exit == "signal 9 (SIGKILL)"
    assert after["rag"].pid == before["rag"].pid and after["rag"].restarts == 0
    assert sources(post(phase2, "/query", {"collection": COLLECTION, "query": "chat model fails",
                                           "answer": False}))


def test_gateway_down_gives_503_and_retrieval_still_works(phase2):
    backend = ProcessBackend(phase2)
    assert backend.down(["gateway"]) == ["gateway"]
    try:
        r = post(phase2, "/query", {"collection": COLLECTION,
                                    "query": "What happens when the chat model fails?"})
        assert r.status_code == 503 and r.headers.get("retry-after")
        assert r.json()["error"]["code"] == "gateway_unavailable"
        retrieval = post(phase2, "/query", {"collection": COLLECTION, "query": "chat model fails",
                                            "answer": False})
        assert retrieval.status_code == 200
    finally:
        backend.up(2)


def test_embedding_down_gives_503_with_retry_after(phase2):
    backend = ProcessBackend(phase2)
    assert backend.down(["embedding"]) == ["embedding"]
    r = post(phase2, "/query", {"collection": COLLECTION, "query": "임베딩 벡터는 몇 차원인가요?"})
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"].isdigit()
    assert r.json()["error"]["code"] == "embedding_unavailable"
    r = post(phase2, "/index", {"collection": COLLECTION, "documents": [{"id": "x", "text": "y"}]})
    assert r.status_code == 503 and r.headers.get("retry-after")
    health = httpx.get(phase2.url("rag") + "/health").json()
    assert health["status"] == "ok" and health["dependencies"]["embedding"]["state"] == "down"
    assert httpx.get(phase2.url("rag") + "/ready", timeout=30).status_code == 503

"""From the qdrant-client local store to the edge store: detected at start-up, migrated only on request,
and the RAG smoke queries (English and Korean, real MiniLM vectors) rank the same sources after."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from suite import cli
from suite.embedding.model import default_model_path, load_model
from suite.rag.app import create_app
from suite.rag.chunking import chunk_text
from suite.settings import Settings
from suite.vectorstore import EdgeStore, EmbeddedQdrantStore, Point, open_store

DATA = json.loads((Path(__file__).parents[1] / "runbooks" / "data" / "smoke_docs.json").read_text("utf-8"))
COLLECTION = "smoke"


@pytest.fixture(scope="module")
def model():
    return load_model(default_model_path(Settings()), "cpu")


def index_like_the_service(store, model, settings: Settings) -> None:
    """What POST /index does: chunks per document, one vector per chunk, the document replaced whole."""
    store.ensure_collection(COLLECTION, model.dimension)
    for doc in DATA["documents"]:
        chunks = chunk_text(doc["text"], settings.rag.chunk_chars, settings.rag.chunk_overlap)
        vectors = model.encode(chunks)
        store.replace_document(COLLECTION, doc["id"], [
            Point(doc["id"], n, text, vectors[n].tolist(), doc.get("metadata", {})) for n, text in enumerate(chunks)])


def ranked_sources(store, model) -> dict[str, list[str]]:
    vectors = model.encode([q["query"] for q in DATA["queries"]])
    return {q["query"]: [h.doc_id for h in store.search(COLLECTION, v.tolist(), 3)]
            for q, v in zip(DATA["queries"], vectors)}


def test_local_store_is_announced_then_migrated_on_request_with_the_same_rankings(model, tmp_path, monkeypatch,
                                                                                   capsys):
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path))
    settings = Settings()
    local = EmbeddedQdrantStore(settings.local_store_path)
    index_like_the_service(local, model, settings)
    before = ranked_sources(local, model)
    points = local.count(COLLECTION)
    local.close()
    assert all(before[q["query"]][0] == q["expect"] for q in DATA["queries"])  # the smoke expectations hold

    # start-up on the edge default: the old store is neither read nor copied, but said out loud
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:  # Host is checked
        store = client.get("/health").json()["dependencies"]["vector_store"]
    assert store["kind"] == "edge" and store["indexes"] == {}
    where = str(settings.local_store_path).replace(str(settings.data_dir), "<data_dir>")  # no paths on /health
    assert any("suite rag migrate" in n and where in n for n in store["notices"])

    assert cli.main(["rag", "migrate"]) == 0
    out = capsys.readouterr().out
    assert f"{COLLECTION}: copied, {points} points" in out and "rank the same" in out

    edge = open_store(settings)
    try:
        assert isinstance(edge, EdgeStore) and edge.count(COLLECTION) == points
        assert ranked_sources(edge, model) == before
        assert any("was migrated" in n for n in edge.describe()["notices"])
        assert cli.main(["rag", "migrate"]) == 2  # the store is held (as by a running rag service)
        assert "one owner" in capsys.readouterr().out
    finally:
        edge.close()

    assert cli.main(["rag", "migrate", "--json"]) == 0  # again: nothing is overwritten without --replace
    report = json.loads(capsys.readouterr().out)
    assert [c["status"] for c in report["collections"]] == ["skipped"] and report["ok"]
    assert cli.main(["rag", "migrate", "--replace"]) == 0
    assert f"{COLLECTION}: replaced, {points} points" in capsys.readouterr().out
    assert cli.main(["rag", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["store"]["kind"] == "edge" and status["local_store"]["migrated"]["collections"] == {
        COLLECTION: points}
    assert status["collections"][0]["index"]["hnsw"] == "current"

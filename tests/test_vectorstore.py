"""The vector-store contract, run against every implementation available here.

Embedded (local path and in-memory) always; a Qdrant server only when ``QDRANT_URL`` points at one.
"""

from __future__ import annotations

import os
import uuid

import pytest

from suite.net import free_port
from suite.settings import Settings
from suite.vectorstore import (
    CollectionNotFound,
    DimensionMismatch,
    EmbeddedQdrantStore,
    Point,
    ServerQdrantStore,
    StoreUnavailable,
    open_store,
    point_id,
)

DIM = 4


def vec(*xs: float) -> list[float]:
    return list(xs) + [0.0] * (DIM - len(xs))


def points(doc: str, n: int, base: float = 1.0) -> list[Point]:
    return [Point(doc, i, f"{doc} chunk {i}", vec(base, i + 1.0), {"lang": "en"}) for i in range(n)]


@pytest.fixture(params=["embedded-path", "embedded-memory", "server"])
def store(request, tmp_path):
    if request.param == "embedded-path":
        s = EmbeddedQdrantStore(tmp_path / "qdrant")
    elif request.param == "embedded-memory":
        s = EmbeddedQdrantStore(":memory:")
    else:
        url = os.environ.get("QDRANT_URL")
        if not url:
            pytest.skip("no Qdrant server: set QDRANT_URL (e.g. http://127.0.0.1:6333) to run these")
        s = ServerQdrantStore(url)
    names: list[str] = []
    # unique collection names per test, so a shared server is never polluted
    s.test_name = lambda: names.append(f"t_{uuid.uuid4().hex[:8]}") or names[-1]
    yield s
    for n in names:
        if s.has_collection(n):
            s.drop_collection(n)
    s.close()


def test_point_ids_are_deterministic_and_distinct():
    assert point_id("doc", 0) == point_id("doc", 0)
    assert point_id("doc", 0) != point_id("doc", 1) != point_id("doc2", 0)
    uuid.UUID(point_id("문서", 3))  # a valid UUID, whatever the document id


def test_ensure_collection_creates_once_and_refuses_another_dimension(store):
    name = store.test_name()
    assert store.ensure_collection(name, DIM) is True
    assert store.ensure_collection(name, DIM) is False
    with pytest.raises(DimensionMismatch):
        store.ensure_collection(name, DIM + 1)
    assert name in [c.name for c in store.collections()]


def test_replacing_a_document_never_duplicates(store):
    name = store.test_name()
    store.ensure_collection(name, DIM)
    store.replace_document(name, "a", points("a", 3))
    store.replace_document(name, "b", points("b", 2, base=-1.0))
    store.replace_document(name, "a", points("a", 3))
    assert store.count(name) == 5
    store.replace_document(name, "a", points("a", 1))  # shorter now: stale chunks 1 and 2 must go
    assert store.count(name, "a") == 1 and store.count(name) == 3
    store.delete_document(name, "b")
    assert store.count(name) == 1


def test_search_returns_best_first_with_payload(store):
    name = store.test_name()
    store.ensure_collection(name, DIM)
    store.replace_document(name, "east", [Point("east", 0, "동쪽 east", vec(1, 0), {"lang": "ko"})])
    store.replace_document(name, "north", [Point("north", 0, "north", vec(0, 1))])
    hits = store.search(name, vec(0.9, 0.1), top_k=2)
    assert [h.doc_id for h in hits] == ["east", "north"]
    assert hits[0].score > hits[1].score
    assert hits[0].text == "동쪽 east" and hits[0].metadata == {"lang": "ko"} and hits[0].chunk_no == 0


def test_unknown_collection_is_reported_as_such(store):
    missing = store.test_name()
    assert not store.has_collection(missing)
    for call in (lambda: store.search(missing, vec(1), 1), lambda: store.count(missing),
                 lambda: store.delete_document(missing, "x")):
        with pytest.raises(CollectionNotFound):
            call()


def test_embedded_store_persists_and_allows_one_owner(tmp_path):
    path = tmp_path / "q"
    first = EmbeddedQdrantStore(path)
    first.ensure_collection("kept", DIM)
    first.replace_document("kept", "d", points("d", 2))
    with pytest.raises(StoreUnavailable):
        EmbeddedQdrantStore(path)  # local mode: one client per path
    first.close()
    again = EmbeddedQdrantStore(path)
    assert again.count("kept") == 2
    again.close()


def test_unreachable_server_is_unavailable_not_a_crash():
    port = free_port()  # nothing listens here once the socket closes
    store = ServerQdrantStore(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.has_collection("x")


def test_settings_choose_the_implementation(tmp_path):
    local = open_store(Settings(data_dir=tmp_path))
    assert isinstance(local, EmbeddedQdrantStore) and local.location == str(tmp_path / "qdrant")
    local.close()
    server = open_store(Settings(data_dir=tmp_path, rag={"qdrant_url": "http://127.0.0.1:6333"}))
    assert isinstance(server, ServerQdrantStore) and server.location == "http://127.0.0.1:6333"

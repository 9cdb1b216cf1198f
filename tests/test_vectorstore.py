"""The vector-store contract, run against every implementation available here.

``edge`` (Qdrant Edge, the embedded default) and ``local`` (qdrant-client local mode, on a path and in
memory) always; ``server`` only when ``QDRANT_URL`` points at a Qdrant server.
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
    EdgeStore,
    EmbeddedQdrantStore,
    InvalidFilter,
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


@pytest.fixture(params=["edge", "local-path", "local-memory", "server"])
def store(request, tmp_path):
    if request.param == "edge":
        s = EdgeStore(tmp_path / "edge")
    elif request.param == "local-path":
        s = EmbeddedQdrantStore(tmp_path / "qdrant")
    elif request.param == "local-memory":
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


def test_metadata_filters_narrow_search_and_count(store):
    name = store.test_name()
    store.ensure_collection(name, DIM)
    store.replace_document(name, "en1", [Point("en1", 0, "one", vec(1, 0), {"lang": "en", "tier": 1})])
    store.replace_document(name, "ko1", [Point("ko1", 0, "하나", vec(0.95, 0.05), {"lang": "ko", "tier": 2})])
    store.replace_document(name, "ko2", [Point("ko2", 0, "둘", vec(0, 1), {"lang": "ko", "tier": 1})])
    assert [h.doc_id for h in store.search(name, vec(1, 0), 3)] == ["en1", "ko1", "ko2"]
    assert [h.doc_id for h in store.search(name, vec(1, 0), 3, where={"lang": "ko"})] == ["ko1", "ko2"]
    assert [h.doc_id for h in store.search(name, vec(1, 0), 3, where={"lang": "ko", "tier": 1})] == ["ko2"]
    assert [h.doc_id for h in store.search(name, vec(1, 0), 3, where={"lang": ["en", "xx"]})] == ["en1"]
    assert store.search(name, vec(1, 0), 3, where={"lang": "fr"}) == []
    assert store.count(name, where={"lang": "ko"}) == 2 and store.count(name, "ko1", where={"tier": 2}) == 1
    for bad in ({"a.b": "x"}, {"lang": 1.5}, {"lang": []}, {"lang": {"$ne": 1}}, {"lang": ["a", 1]}):
        with pytest.raises(InvalidFilter):
            store.search(name, vec(1, 0), 3, where=bad)


def test_points_round_trip_through_iter_points_and_upsert(store):
    name, copy = store.test_name(), store.test_name()
    store.ensure_collection(name, DIM)
    written = points("a", 5) + [Point("b", 0, "비", vec(0, 0, 1), {"lang": "ko", "n": 3})]
    store.replace_document(name, "a", written[:5])
    store.replace_document(name, "b", written[5:])
    exported = [p for batch in store.iter_points(name, batch=2) for p in batch]
    assert sorted(p.id for p in exported) == sorted(p.id for p in written)
    by_id = {p.id: p for p in exported}
    assert by_id[written[5].id].text == "비" and by_id[written[5].id].metadata == {"lang": "ko", "n": 3}
    store.ensure_collection(copy, DIM)
    assert store.upsert(copy, exported) == 6 and store.upsert(copy, exported) == 6  # same ids overwrite
    assert store.count(copy) == 6 and store.count(copy, "a") == 5
    assert [h.doc_id for h in store.search(copy, vec(0, 0, 1), 1)] == ["b"]


def test_unknown_collection_is_reported_as_such(store):
    missing = store.test_name()
    assert not store.has_collection(missing)
    for call in (lambda: store.search(missing, vec(1), 1), lambda: store.count(missing),
                 lambda: store.delete_document(missing, "x"), lambda: store.upsert(missing, points("x", 1)),
                 lambda: list(store.iter_points(missing))):
        with pytest.raises(CollectionNotFound):
            call()
    assert not store.drop_collection(missing)


@pytest.mark.parametrize("make", [EdgeStore, EmbeddedQdrantStore], ids=["edge", "local"])
def test_embedded_store_persists_and_allows_one_owner(tmp_path, make):
    path = tmp_path / "q"
    first = make(path)
    first.ensure_collection("kept", DIM)
    first.replace_document("kept", "d", points("d", 2))
    with pytest.raises(StoreUnavailable):
        make(path)  # one owner per path, even in the same process
    first.close()
    again = make(path)
    assert again.count("kept") == 2 and [c.name for c in again.collections()] == ["kept"]
    assert again.search("kept", vec(1, 1), 1)[0].doc_id == "d"
    again.close()


@pytest.mark.integration
def test_an_edge_store_waits_for_a_predecessor_still_exiting(tmp_path):
    """A rag service restarted right after a kill -9 may find the lock still held by the dying process
    (the durability drill saw it ~2 s after the kill): it waits up to lock_wait_s, then opens."""
    import subprocess
    import sys
    import time

    path = tmp_path / "q"
    EdgeStore(path).close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(1.5)"), str(path / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="open in another process"):
            EdgeStore(path)  # no wait: refused at once
        assert time.monotonic() - t0 < 1.0
        store = EdgeStore(path, lock_wait_s=10)  # opens once the holder has exited
        assert holder.poll() is not None and time.monotonic() - t0 < 10
        store.close()
        holder2 = subprocess.Popen([sys.executable, "-c", (
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX); "
            "print('held', flush=True); time.sleep(30)"), str(path / ".lock")], stdout=subprocess.PIPE, text=True)
        assert holder2.stdout.readline().strip() == "held"
        with pytest.raises(StoreUnavailable, match=r"waited 0.5 s"):
            EdgeStore(path, lock_wait_s=0.5)  # a live owner still refuses, after the wait
        holder2.kill()
        holder2.wait()
    finally:
        holder.kill()
        holder.wait()


def test_unreachable_server_is_unavailable_not_a_crash():
    port = free_port()  # nothing listens here once the socket closes
    store = ServerQdrantStore(f"http://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(StoreUnavailable):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.has_collection("x")


def test_settings_choose_the_implementation(tmp_path):
    edge = open_store(Settings(data_dir=tmp_path))  # the embedded default
    assert isinstance(edge, EdgeStore) and edge.location == str(tmp_path / "edge")
    assert edge.describe()["kind"] == "edge" and "notices" not in edge.describe()
    edge.close()
    local = open_store(Settings(data_dir=tmp_path, rag={"store": "local"}))
    assert isinstance(local, EmbeddedQdrantStore) and local.location == str(tmp_path / "qdrant")
    local.close()
    server = open_store(Settings(data_dir=tmp_path, rag={"qdrant_url": "http://127.0.0.1:6333"}))
    assert isinstance(server, ServerQdrantStore) and server.location == "http://127.0.0.1:6333"

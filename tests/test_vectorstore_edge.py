"""What only the edge store does: background optimize off the request path, crash-safe shard swaps,
snapshots in the shard format (checked with qdrant-edge-py directly, not through the project's code)."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest
import qdrant_edge as qe

from suite.vectorstore import CollectionNotFound, EdgeStore, Point, StoreError

DIM = 16
THRESHOLD = 200


def docs(n_docs: int, chunks: int = 10, seed: int = 0, prefix: str = "d") -> dict[str, list[Point]]:
    rng = np.random.default_rng(seed)
    out = {}
    for d in range(n_docs):
        doc = f"{prefix}{d}"
        out[doc] = [Point(doc, c, f"{doc} chunk {c}", rng.standard_normal(DIM).tolist(), {"n": d})
                    for c in range(chunks)]
    return out


def index(store: EdgeStore, name: str, documents: dict[str, list[Point]]) -> None:
    for doc, pts in documents.items():
        store.replace_document(name, doc, pts)


@pytest.fixture
def store(tmp_path):
    s = EdgeStore(tmp_path / "edge", optimize_threshold=THRESHOLD)
    s.ensure_collection("c", DIM)
    yield s
    s.close()


class HeldOptimizer:
    """The next background optimize stops after taking its copy (``copied`` is set), until ``release``."""

    def __init__(self, monkeypatch) -> None:
        self.copied, self.release = threading.Event(), threading.Event()
        real = EdgeStore._run_optimizer

        def waiting(store, *args, **kwargs):
            self.copied.set()
            assert self.release.wait(60), "test never released the optimizer"
            return real(store, *args, **kwargs)

        monkeypatch.setattr(EdgeStore, "_run_optimizer", waiting)


@pytest.mark.integration
def test_bulk_index_past_the_threshold_optimizes_in_the_background_while_queries_go_on(store, monkeypatch):
    held = HeldOptimizer(monkeypatch)
    data = docs(30)  # 300 points > THRESHOLD
    index(store, "c", data)
    assert store.collection_info("c").index["hnsw"] == "optimizing"  # started by the write, not by us
    probe = data["d7"][3]
    answered = 0
    for _ in range(20):  # the optimize is held: every one of these runs while it is in progress
        assert store.search("c", probe.vector, 1)[0].doc_id == "d7"
        answered += 1
    held.release.set()
    store.wait_optimized(120)
    info = store.collection_info("c")
    assert answered == 20 and info.points == 300
    # points written after the copy was taken were replayed onto the optimized shard, unindexed yet
    pending = info.index["points_since_optimize"]
    assert info.index["hnsw"] == "current" and pending < THRESHOLD
    assert info.index["indexed_vectors"] >= 300 - pending
    assert info.index["last_optimized_at"] and not info.index["last_error"]
    top = store.search("c", probe.vector, 1)[0]
    assert (top.doc_id, top.chunk_no) == ("d7", 3)


def test_an_optimize_started_at_exactly_the_threshold_builds_the_index(store):
    # 20 documents of 10 chunks: the optimize starts on the write that brings the count to THRESHOLD,
    # and its copy holds exactly THRESHOLD points. The engine counts its threshold in KB of vectors;
    # rounded up, a segment of exactly THRESHOLD points was under it: "current", 0 vectors indexed (the
    # bulk-index test above failed that way whenever its copy was taken before the 21st document)
    index(store, "c", docs(20))
    store.wait_optimized(120)
    info = store.collection_info("c").index
    assert info["hnsw"] == "current" and info["points_since_optimize"] == 0
    assert info["indexed_vectors"] == THRESHOLD, info


@pytest.mark.integration
def test_writes_made_during_an_optimize_are_replayed_onto_the_optimized_shard(store, monkeypatch, tmp_path):
    held = HeldOptimizer(monkeypatch)
    index(store, "c", docs(30))
    assert held.copied.wait(30)
    # the copy is being optimized now: these land on the live shard only and must survive the swap
    index(store, "c", docs(3, seed=5, prefix="late"))
    store.delete_document("c", "d0")
    store.replace_document("c", "d1", [Point("d1", 0, "d1 rewritten", [1.0] * DIM)])
    held.release.set()
    store.wait_optimized(120)
    assert store.count("c") == 300 + 30 - 10 - 9
    assert store.count("c", "d0") == 0 and store.count("c", "late2") == 10 and store.count("c", "d1") == 1
    assert store.search("c", [1.0] * DIM, 1)[0].text == "d1 rewritten"
    store.close()
    again = EdgeStore(tmp_path / "edge", optimize_threshold=THRESHOLD)
    assert again.count("c") == 311 and again.count("c", "d0") == 0
    again.close()


def test_a_failed_optimize_leaves_the_live_shard_serving(store, monkeypatch):
    def broken(self, *args, **kwargs):
        raise StoreError("optimizer exited 1: simulated")

    monkeypatch.setattr(EdgeStore, "_run_optimizer", broken)
    data = docs(25)
    index(store, "c", data)
    store.wait_optimized(60)
    info = store.collection_info("c")
    assert info.points == 250 and info.index["hnsw"] == "stale" and "simulated" in info.index["last_error"]
    assert store.search("c", data["d3"][0].vector, 1)[0].doc_id == "d3"
    assert not list((store.root / "c").glob("shard.optimizing-*"))  # the copy is gone


def test_an_interrupted_swap_is_undone_at_open(tmp_path):
    path = tmp_path / "edge"
    s = EdgeStore(path, optimize_threshold=THRESHOLD)
    s.ensure_collection("c", DIM)
    index(s, "c", docs(5))
    s.close()
    folder = path / "c"
    # what a process killed mid-swap leaves: the old shard aside, a half-moved new one, a copy
    os.rename(folder / "shard", folder / "shard.old")
    (folder / "shard").mkdir()
    (folder / "shard" / "garbage").write_bytes(b"\0" * 100)
    (folder / "shard.optimizing-deadbeef").mkdir()
    again = EdgeStore(path, optimize_threshold=THRESHOLD)
    assert again.count("c") == 50
    assert any("interrupted" in n for n in again.describe()["notices"])
    assert sorted(p.name for p in folder.iterdir()) == ["collection.json", "shard"]
    again.close()


def test_dropping_a_collection_while_it_is_optimized_discards_the_copy(store, monkeypatch):
    held = HeldOptimizer(monkeypatch)
    index(store, "c", docs(30))
    assert held.copied.wait(30)
    assert store.drop_collection("c")
    held.release.set()
    store.wait_optimized(60)
    assert not store.has_collection("c") and not (store.root / "c").exists()
    with pytest.raises(CollectionNotFound):
        store.count("c")


def test_a_snapshot_unpacks_into_a_fresh_shard_with_equal_point_counts(store, tmp_path):
    data = docs(4, chunks=3)
    index(store, "c", data)
    store.delete_document("c", "d2")
    result = store.snapshot("c", tmp_path / "c.snapshot")
    assert result["points"] == 9 and result["bytes"] == (tmp_path / "c.snapshot").stat().st_size
    assert result["bytes"] < 5_000_000  # sparse: the shard's 32 MiB pre-allocated files are holes
    assert not (tmp_path / "c.snapshot.partial").exists()
    # checked with qdrant-edge-py alone
    qe.EdgeShard.unpack_snapshot(str(tmp_path / "c.snapshot"), str(tmp_path / "fresh"))
    fresh = qe.EdgeShard.load(str(tmp_path / "fresh"))
    try:
        assert fresh.count(qe.CountRequest(exact=True)) == store.count("c") == 9
        target = data["d1"][2]
        hit = fresh.query(qe.QueryRequest(limit=1, query=qe.Query.Nearest(target.vector), with_payload=True))[0]
        assert hit.payload["doc_id"] == "d1" and hit.payload["chunk_no"] == 2 and str(hit.id) == target.id
    finally:
        fresh.close()


def test_a_snapshot_restores_in_place_or_as_a_new_collection_and_a_bad_archive_changes_nothing(store, tmp_path):
    index(store, "c", docs(3))
    store.snapshot("c", tmp_path / "c.snapshot")
    index(store, "c", docs(2, seed=3, prefix="after"))
    assert store.count("c") == 50
    assert store.restore_snapshot("c", tmp_path / "c.snapshot")["points"] == 30
    assert store.count("c") == 30 and store.count("c", "after0") == 0
    assert store.restore_snapshot("copy", tmp_path / "c.snapshot") == {"collection": "copy", "points": 30,
                                                                      "dimension": DIM}
    assert store.count("copy") == 30
    truncated = tmp_path / "truncated.snapshot"
    truncated.write_bytes((tmp_path / "c.snapshot").read_bytes()[:20_000])
    with pytest.raises(StoreError):
        store.restore_snapshot("c", truncated)
    assert store.count("c") == 30 and sorted(p.name for p in (store.root / "c").iterdir()) == [
        "collection.json", "shard"]
    with pytest.raises(StoreError):
        store.restore_snapshot("../escape", tmp_path / "c.snapshot")


def test_collection_names_never_leave_the_store_folder(store, tmp_path):
    for bad in ("../x", "/abs", ".hidden", "a/b", ""):
        assert not store.has_collection(bad)
        with pytest.raises(StoreError):
            store.ensure_collection(bad, DIM)
    assert sorted(p.name for p in store.root.iterdir() if not p.name.startswith(".")) == ["c"]
    shutil.rmtree(tmp_path / "x", ignore_errors=True)

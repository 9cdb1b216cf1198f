"""Recall@5 of the edge store's HNSW against exact search: the corpus, the embedding cache, the measure
and the load runbook's info row (issue 33)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from harness.load import recall
from harness.result import Status
from suite.settings import Settings
from suite.vectorstore.recall import hnsw_recall


def fake_embedder(calls: list[int]):
    """Deterministic unit-ish vectors per text (a digest seeds them), counting the calls."""
    def embed(batch: list[str]) -> np.ndarray:
        calls.append(len(batch))
        return np.stack([np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=24)
                         for t in batch])
    return embed


def test_the_corpus_is_real_distinct_chunks_in_a_fixed_order_starting_with_this_projects_docs():
    chunks = recall.corpus(600)
    assert len(chunks) == 600 and len(set(chunks)) == 600
    assert all(recall.MIN_CHARS <= len(c) <= recall.CHUNK_CHARS for c in chunks)
    assert chunks[0].startswith("# Suite Workbench")
    assert recall.corpus(300) == chunks[:300]


def test_embeddings_are_unit_vectors_and_a_rerun_reads_the_cache(tmp_path):
    chunks = recall.corpus(300)
    calls: list[int] = []
    first = recall.cached_embeddings(chunks, fake_embedder(calls), tmp_path)
    assert calls == [recall.EMBED_BATCH, 300 - recall.EMBED_BATCH]
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    again = recall.cached_embeddings(chunks, fake_embedder(calls), tmp_path)
    assert len(calls) == 2 and np.array_equal(first, again)
    recall.cached_embeddings(chunks[:299], fake_embedder(calls), tmp_path)  # other texts: embedded afresh
    assert len(calls) == 4


@pytest.mark.integration
def test_hnsw_recall_compares_the_index_with_exact_cosine_top_k():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 24))
    data = centres[rng.integers(0, 8, 800)] + 0.4 * rng.normal(size=(800, 24))
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    r = hnsw_recall(data[:760], data[760:], k=5)
    assert (r.points, r.queries, r.k) == (760, 40, 5)
    assert 0.9 <= r.recall <= 1.0 and r.worst <= r.recall
    assert r.p50_ms <= r.p95_ms


@pytest.mark.integration
def test_hnsw_recall_counts_a_miss(monkeypatch):
    """An index that returns the wrong neighbours scores below 1: the comparison is real."""
    import qdrant_edge as qe

    rng = np.random.default_rng(2)
    data = rng.normal(size=(300, 16))
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    real = qe.Query.Nearest
    monkeypatch.setattr(qe.Query, "Nearest", lambda v: real([-x for x in v]))  # the farthest points instead
    assert hnsw_recall(data[:280], data[280:], k=5).recall < 0.2


@pytest.fixture
def quiet_settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path)


@pytest.mark.integration
def test_the_info_row_shows_recall_and_never_judges(quiet_settings, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(recall, "service_embedder", lambda settings: fake_embedder(calls))
    row = recall.info_row(quiet_settings, chunks=400, queries=40)
    assert row.status is Status.INFO and row.id == "load.rag.recall"
    assert 0.0 <= row.value <= 1.0 and "400 chunks" in row.measured
    assert sum(calls) == 440 and any((quiet_settings.data_dir / "cache" / "recall").iterdir())


def test_the_info_row_says_why_it_has_no_figure_when_the_embedding_service_is_down(quiet_settings, monkeypatch):
    def down(batch):
        raise ConnectionError("connection refused")
    monkeypatch.setattr(recall, "service_embedder", lambda settings: down)
    row = recall.info_row(quiet_settings, chunks=400, queries=40)
    assert row.status is Status.INFO and row.value is None
    assert row.measured == "not measured" and "connection refused" in row.detail


def test_the_runbook_measures_recall_only_beside_a_rag_scenario_of_its_phase(quiet_settings, monkeypatch):
    from harness.load.plan import plan

    asked: list[int] = []
    monkeypatch.setattr(recall, "info_row", lambda settings, n, progress=None: asked.append(n) or "row")
    assert recall.rag_info(quiet_settings, plan("code,embedding"), "seed", 10_000) == []
    assert recall.rag_info(quiet_settings, plan("rag"), "seed", 10_000, phase=1) == []
    assert recall.rag_info(quiet_settings, plan("rag"), "seed", 0) == []
    foreign = type("Foreign", (), {"ours": False})()
    assert recall.rag_info(quiet_settings, plan("rag"), "seed", 10_000, target=foreign) == []
    assert recall.rag_info(quiet_settings, plan("", profile="seed"), "seed", 10_000) == ["row"]
    assert recall.rag_info(quiet_settings, plan("", profile="quick"), "quick", 10_000) == ["row"]
    assert asked == [10_000, recall.QUICK_CHUNKS]


@pytest.mark.integration
def test_the_info_row_against_the_real_embedding_service(tmp_path):
    """MiniLM through the embedding service's /embed with the run's guest key, as the runbook does."""
    from suite.testing import serve, stack_settings

    settings = stack_settings(tmp_path)
    with serve(settings, "embedding"):
        row = recall.info_row(settings, chunks=300, queries=30)
    assert row.status is Status.INFO and row.value is not None, row.detail
    assert 0.8 <= row.value <= 1.0  # real sentence embeddings: HNSW finds nearly all of the exact top 5
    cached = list((settings.data_dir / "cache" / "recall").glob("minilm-330-*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape == (330, 384)

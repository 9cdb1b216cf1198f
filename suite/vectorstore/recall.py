"""Recall@k of the embedded store's HNSW search against exact search, on vectors you give it.

The same store the RAG service runs (``EdgeStore``, Qdrant Edge in process, HNSW built by the same
background optimize with the same ``m`` / ``ef_construct``), in a temporary folder: the points are
upserted, the HNSW index is built explicitly (the service builds it once a segment passes
``rag.optimize_threshold`` points; below that it searches exactly and recall is 1 by construction),
then each query's top-k from the index is compared with the exact top-k by cosine over all points
(numpy). Used by ``benchmarks/vector_recall.py`` and by the load runbook's RAG info row
(``harness.load.recall``).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLLECTION = "recall"


@dataclass(frozen=True)
class Recall:
    points: int
    queries: int
    k: int
    recall: float  # share of the exact top-k the index returned, over every query
    worst: float  # the lowest recall of a single query
    build_s: float  # the HNSW build (optimize)
    p50_ms: float
    p95_ms: float
    ef: int = 0  # hnsw_ef sent with each query (0: the engine's default, what the service sends)


def hnsw_recall(data: np.ndarray, queries: np.ndarray, k: int = 5, ef: int = 0) -> Recall:
    """Recall@``k`` of HNSW over ``data`` (rows: unit vectors) for ``queries`` (module docstring)."""
    import qdrant_edge as qe

    from suite.vectorstore import EdgeStore, Point

    data = np.asarray(data, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="recall-") as tmp:
        store = EdgeStore(Path(tmp) / "edge", optimize_threshold=max(1, len(data)), auto_optimize=False)
        try:
            store.ensure_collection(COLLECTION, data.shape[1])
            for start in range(0, len(data), 1000):
                store.upsert(COLLECTION, [Point(f"d{i}", 0, "", data[i].tolist(), {})
                                          for i in range(start, min(len(data), start + 1000))])
            t0 = time.perf_counter()
            store.optimize(COLLECTION, wait=True)
            build_s = time.perf_counter() - t0
            truth = np.argsort(-(queries @ data.T), axis=1)[:, :k]
            shard = store._get(COLLECTION).shard  # the service's own query path, with hnsw_ef when asked
            params = qe.SearchParams(hnsw_ef=ef) if ef else None
            per_query, latencies = [], []
            for q, want in zip(queries, truth):
                request = qe.QueryRequest(limit=k, query=qe.Query.Nearest(q.tolist()), with_payload=True, params=params)
                t = time.perf_counter()
                found = shard.query(request)
                latencies.append((time.perf_counter() - t) * 1000)
                got = {(p.payload or {}).get("doc_id") for p in found}
                per_query.append(len(got & {f"d{j}" for j in want}) / k)
        finally:
            store.close()
    return Recall(len(data), len(queries), k, float(np.mean(per_query)), float(min(per_query)), round(build_s, 2),
                  _nearest_rank(latencies, 50), _nearest_rank(latencies, 95), ef)


def _nearest_rank(values: list[float], p: float) -> float:
    """The nearest-rank percentile (numpy's ``inverted_cdf``: a value that was measured)."""
    return round(float(np.percentile(values, p, method="inverted_cdf")), 3)

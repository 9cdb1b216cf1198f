"""The RAG vector store at 10k / 50k / 100k chunks: qdrant-client local mode vs Qdrant Edge, side by side.

    .venv/bin/python benchmarks/vector_store.py [--sizes 10000 50000 100000] [--queries 200] [--write]

Each backend runs in its own child process (so its RSS is its own) through the project's store classes
— what the RAG service calls — on the same deterministic 384-dim unit vectors with chunk-like payloads.
Per size (points are added to reach it, as a growing index would): index throughput (upsert, batches
of 256), for edge the background optimize that builds HNSW (copy + child process + swap, as the service
runs it) and query latency *while* it runs, then query p50 / p95 (top-5, exact nearest-rank
percentiles), recall@5 against exact numpy search, RSS, and reopen time (close, open, first query).
``--write`` replaces the "Vector store" section of docs/benchmarks.md. Read the figures with the load
average printed beside them: the machine is shared.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from _docs import write_section

from harness.load.stats import percentile
from suite.settings import Settings
from suite.vectorstore import EdgeStore, EmbeddedQdrantStore, Point

DIM = 384
TOP_K = 5
COLLECTION = "bench"
SECTION = "Vector store: local mode vs Qdrant Edge"
TEXT = ("Qdrant snapshots copy a collection into one file; restore them with priority=snapshot and check "
        "the sha256 before trusting the copy. ")  # ~190 chars: a chunk-sized payload


def vectors(start: int, stop: int) -> np.ndarray:
    """Unit vectors for points ``start..stop``; the same rows whatever the batch boundaries."""
    rows = [np.random.default_rng(i).standard_normal(DIM, dtype=np.float32) for i in range(start, stop)]
    out = np.stack(rows)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def points(start: int, stop: int, vecs: np.ndarray) -> list[Point]:
    return [Point(f"doc{i // 8}", i % 8, TEXT, vecs[i - start].tolist(), {"lang": "ko" if i % 3 else "en"})
            for i in range(start, stop)]


def open_backend(backend: str, path: Path):
    if backend == "edge":
        cfg = Settings(data_dir=path).rag
        return EdgeStore(path / "edge", optimize_threshold=cfg.optimize_threshold,
                         optimize_threads=cfg.optimize_threads, auto_optimize=False)
    return EmbeddedQdrantStore(path / "qdrant")


def time_queries(store, queries: np.ndarray) -> tuple[list[float], list[list[str]]]:
    lat, found = [], []
    for q in queries:
        t0 = time.perf_counter()
        hits = store.search(COLLECTION, q.tolist(), TOP_K)
        lat.append((time.perf_counter() - t0) * 1000)
        found.append([f"{h.doc_id}/{h.chunk_no}" for h in hits])
    return lat, found


def queries_during_optimize(store) -> dict:
    """Start the background optimize and keep querying until it is done (what clients see meanwhile)."""
    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    store.optimize(COLLECTION, wait=False)
    lat: list[float] = []
    while store.collection_info(COLLECTION).index["hnsw"] == "optimizing":
        q = rng.standard_normal(DIM, dtype=np.float32)
        t = time.perf_counter()
        store.search(COLLECTION, q.tolist(), TOP_K)
        lat.append((time.perf_counter() - t) * 1000)
        time.sleep(0.01)
    index = store.collection_info(COLLECTION).index
    return {"optimize_s": round(time.perf_counter() - t0, 2), "queries_during": len(lat),
            "during_p50_ms": _round(percentile(lat, 50)), "during_p95_ms": _round(percentile(lat, 95)),
            "during_max_ms": _round(max(lat) if lat else None), "indexed_vectors": index["indexed_vectors"],
            "index_error": index["last_error"]}


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 2)


def run_child(backend: str, sizes: list[int], n_queries: int) -> list[dict]:
    queries = np.random.default_rng(10_000_000).standard_normal((n_queries, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    proc = psutil.Process()
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{backend}-") as tmp:
        path = Path(tmp)
        store = open_backend(backend, path)
        store.ensure_collection(COLLECTION, DIM)
        have = 0
        all_vecs = np.zeros((0, DIM), dtype=np.float32)
        for size in sizes:
            row: dict = {"backend": backend, "points": size}
            new = vectors(have, size)
            all_vecs = np.concatenate([all_vecs, new])
            t0 = time.perf_counter()
            for start in range(have, size, 256):
                stop = min(size, start + 256)
                store.upsert(COLLECTION, points(start, stop, new[start - have:stop - have]))
            row["index_s"] = round(time.perf_counter() - t0, 2)
            row["index_pts_per_s"] = round((size - have) / row["index_s"])
            have = size
            if backend == "edge":
                row.update(queries_during_optimize(store))
            time_queries(store, queries[:10])  # warm-up
            lat, found = time_queries(store, queries)
            exact = np.argsort(-(all_vecs @ queries.T), axis=0)[:TOP_K].T
            truth = [{f"doc{i // 8}/{i % 8}" for i in row_ids} for row_ids in exact]
            row["recall_at_5"] = round(float(np.mean([len(set(f) & t) / TOP_K for f, t in zip(found, truth)])), 4)
            row["p50_ms"], row["p95_ms"] = round(percentile(lat, 50), 2), round(percentile(lat, 95), 2)
            row["rss_mb"] = round(proc.memory_info().rss / 2**20)
            store.close()
            t0 = time.perf_counter()
            store = open_backend(backend, path)
            row["open_s"] = round(time.perf_counter() - t0, 3)
            store.search(COLLECTION, queries[0].tolist(), TOP_K)
            row["reopen_s"] = round(time.perf_counter() - t0, 3)
            results.append(row)
            sys.stderr.write(json.dumps(row) + "\n")
        store.close()
    return results


def fmt(value, unit: str = "") -> str:
    return "–" if value is None else f"{value:,}{unit}" if isinstance(value, int) else f"{value}{unit}"


def table(rows: list[dict]) -> str:
    lines = ["| points | backend | index (points/s) | optimize (s) | query p50 / p95 (ms) | during optimize "
             "p50 / p95 / max (ms) | recall@5 | RSS (MB) | reopen (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["points"], r["backend"] != "local")):
        during = (f"{fmt(r['during_p50_ms'])} / {fmt(r['during_p95_ms'])} / {fmt(r['during_max_ms'])} "
                  f"({r['queries_during']} queries)" if r["backend"] == "edge" and r.get("queries_during")
                  else "–")
        lines.append(f"| {r['points']:,} | {r['backend']} | {r['index_pts_per_s']:,} ({r['index_s']} s) | "
                     f"{fmt(r.get('optimize_s'))} | {r['p50_ms']} / {r['p95_ms']} | {during} | "
                     f"{r['recall_at_5']} | {r['rss_mb']:,} | {r['reopen_s']} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--backends", nargs="+", default=["local", "edge"], choices=["local", "edge"])
    ap.add_argument("--local-sizes", type=int, nargs="+", help="sizes for local mode (default: --sizes); "
                    "its upserts are ~100x slower, so a loaded machine may want fewer")
    ap.add_argument("--write", action="store_true", help="replace the section in docs/benchmarks.md")
    ap.add_argument("--child", choices=["local", "edge"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, sorted(args.sizes), args.queries)))
        return 0
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows: list[dict] = []
    for backend in args.backends:
        sizes = args.local_sizes if backend == "local" and args.local_sizes else args.sizes
        out = subprocess.run([sys.executable, __file__, "--child", backend, "--queries", str(args.queries),
                              "--sizes", *map(str, sizes)], stdout=subprocess.PIPE, text=True, check=True)
        rows.extend(json.loads(out.stdout))
    uptime_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    threads = Settings().rag.optimize_threads
    body = (f"{table(rows)}\n\n"
            f"Measured {dt.date.today().isoformat()} on {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"`python benchmarks/vector_store.py` ({args.queries} random unit-vector queries, top-{TOP_K}; "
            f"edge with the defaults: optimize threshold {Settings().rag.optimize_threshold} points, "
            f"{threads} HNSW build thread{'s' if threads != 1 else ''}). The machine is shared — "
            f"`uptime` before: `{uptime_before}`; after: `{uptime_after}`.")
    print(body)
    if args.write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Retrieval quality at scale: recall@5 of the embedded store's HNSW index against exact search, on
real MiniLM embeddings of a real text corpus.

The corpus is documentation, chunked: this project's own (README, ``docs/``, ``load/README.md``, the
runbooks' Markdown), then the Python language reference that ships with the interpreter
(``pydoc_data.topics``), then the docstrings of the standard library and of the installed packages,
in a fixed order, cut into chunks of about ``CHUNK_CHARS`` characters at paragraph, sentence or word
boundaries (``suite.rag.chunking``, what the RAG service indexes with), duplicates dropped — as many
as asked, 10k-100k included. Queries are held-out chunks (never indexed): for each, the index's top 5
against the exact top 5 by cosine (``suite.vectorstore.recall``). Random vectors are HNSW's worst
case (recall 0.14 at 100k): not what RAG data looks like.

Embeddings come from the embedding service over HTTP (``/embed``, the run's key) in the load
runbook, or from sentence-transformers in process in ``benchmarks/vector_recall.py``; either way
they are cached under ``<data_dir>/cache/recall/`` by the texts' digest, so a rerun embeds nothing.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from harness.result import CheckResult, Stage, Status
from suite.settings import Settings, project_root

log = logging.getLogger(__name__)

CHUNK_CHARS = 400
MIN_CHARS = 120  # shorter pieces (a heading, a one-line docstring) are not chunks a query would want
QUERIES = 200
K = 5
EMBED_BATCH = 256  # texts per /embed call (the service truncates above 1024)


def _project_texts() -> Iterator[str]:
    root = project_root()
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "load" / "README.md"]:
        if path.is_file():
            yield path.read_text(encoding="utf-8")
    import json

    for nb in sorted((root / "runbooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8")).get("cells", [])
        yield "\n\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown")


def _python_docs() -> Iterator[str]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        yield topics[name]


def _docstrings(root: str) -> Iterator[str]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("test", "tests", "__pycache__", "idlelib", "site-packages"))
        for name in sorted(f for f in files if f.endswith(".py")):
            try:
                tree = ast.parse(Path(folder, name).read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= MIN_CHARS:
                        yield doc


def texts() -> Iterator[str]:
    """The corpus's documents in their fixed order (module docstring)."""
    yield from _project_texts()
    yield from _python_docs()
    yield from _docstrings(sysconfig.get_paths()["stdlib"])
    for folder in _site_packages():
        yield from _docstrings(folder)


def _site_packages() -> list[str]:
    """Every site-packages folder on the path, once each, in path order (a worktree's venv reaches the
    shared venv's packages through a ``.pth`` line, not through ``purelib``)."""
    seen: set[Path] = set()
    out = []
    for entry in [sysconfig.get_paths()["purelib"], *sys.path]:
        path = Path(entry).resolve() if entry else None
        if path and path.name == "site-packages" and path.is_dir() and path not in seen:
            seen.add(path)
            out.append(str(path))
    return out


def corpus(n: int) -> list[str]:
    """The first ``n`` distinct chunks of the corpus (fewer only if the machine has less text)."""
    from suite.rag.chunking import chunk_text

    seen: set[str] = set()
    out: list[str] = []
    for text in texts():
        for chunk in chunk_text(text, size=CHUNK_CHARS, overlap=0):
            if len(chunk) >= MIN_CHARS and chunk not in seen:
                seen.add(chunk)
                out.append(chunk)
                if len(out) >= n:
                    return out
    return out


def cached_embeddings(chunks: list[str], embed: Callable[[list[str]], np.ndarray], cache: Path,
                      progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Unit vectors of ``chunks`` by ``embed`` (batches of ``EMBED_BATCH``), read from ``cache`` when
    the same texts were embedded before."""
    digest = hashlib.sha256("\x00".join(chunks).encode()).hexdigest()[:20]
    path = Path(cache) / f"minilm-{len(chunks)}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    parts = []
    for start in range(0, len(chunks), EMBED_BATCH):
        parts.append(np.asarray(embed(chunks[start:start + EMBED_BATCH]), dtype=np.float32))
        if progress and (start // EMBED_BATCH) % 8 == 7:
            progress(f"recall: embedded {start + len(parts[-1])} of {len(chunks)} chunks")
    vectors = np.concatenate(parts)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors


def service_embedder(settings: Settings) -> Callable[[list[str]], np.ndarray]:
    """Embeddings from the running embedding service (``/embed``, the run's guest key)."""
    from harness.httpclient import client
    from harness.keys import headers_for

    url, headers = f"{settings.url('embedding')}/embed", headers_for(settings, "guest")

    def embed(batch: list[str]) -> np.ndarray:
        resp = client().post(url, json={"texts": batch}, headers=headers, timeout=300)
        resp.raise_for_status()
        vectors = resp.json()["embeddings"]
        if len(vectors) != len(batch):  # the service drops texts past its max_texts
            raise RuntimeError(f"the embedding service returned {len(vectors)} vectors for {len(batch)} texts "
                               "(embedding.max_texts below the batch)")
        return np.asarray(vectors, dtype=np.float32)
    return embed


def measure(settings: Settings, chunks: int, embed: Callable[[list[str]], np.ndarray] | None = None,
            queries: int = QUERIES, progress: Callable[[str], None] | None = None):
    """Recall@5 of HNSW over ``chunks`` real chunks, ``queries`` held-out ones as queries."""
    from suite.vectorstore.recall import hnsw_recall

    texts_ = corpus(chunks + queries)
    vectors = cached_embeddings(texts_, embed or service_embedder(settings), settings.data_dir / "cache" / "recall",
                                progress)
    held_out = len(texts_) - min(queries, len(texts_) // 5)
    return hnsw_recall(vectors[:held_out], vectors[held_out:], K)


def info_row(settings: Settings, chunks: int, queries: int = QUERIES,
             progress: Callable[[str], None] | None = None) -> CheckResult:
    """``load.rag.recall``: shown beside the RAG scenario's gates, never judged."""
    title = f"rag: recall@{K} of the HNSW index against exact search on real text"
    try:
        r = measure(settings, chunks, queries=queries, progress=progress)
    except Exception as exc:  # an info row never fails the runbook; it says why it has no figure
        return CheckResult("load.rag.recall", title, Stage.LOAD, Status.INFO, target="shown, not a gate",
                           measured="not measured", detail=f"{type(exc).__name__}: {str(exc)[:300]}")
    return CheckResult(
        "load.rag.recall", title, Stage.LOAD, Status.INFO, target="shown, not a gate", value=round(r.recall, 4),
        unit="share", measured=f"{r.recall:.3f} at {r.points:,} chunks",
        detail=(f"{r.points:,} chunks of this project's docs, the Python docs and docstrings (about {CHUNK_CHARS} "
                f"characters each), MiniLM embeddings from the embedding service; {r.queries} held-out chunks as "
                f"queries; HNSW (Qdrant Edge, built explicitly: the RAG service builds it past "
                f"{settings.rag.optimize_threshold:,} points) against exact cosine top {K}; worst query "
                f"{r.worst:.2f}; HNSW built in {r.build_s:.1f} s; query p50 {r.p50_ms:.2f} ms, p95 {r.p95_ms:.2f} ms; "
                f"benchmarks/vector_recall.py --data minilm measures it at 10k-100k"))


QUICK_CHUNKS = 1000  # the quick profile's corpus: about 20 s of embedding on a quiet CPU the first time, cached after


def rag_info(settings: Settings, scenarios, profile: str, chunks: int, phase: int = 3, target=None,
             progress: Callable[[str], None] | None = None) -> list[CheckResult]:
    """The load runbook's recall row, beside the RAG scenario: none when no scenario of the plan
    queries the RAG service in this ``phase``, ``chunks`` is 0, or the load ran against another
    stack (a ``target`` that is not ours: its store and embeddings are not the ones measured here); the quick profile measures at most ``QUICK_CHUNKS``."""
    if target is not None and not target.ours:
        return []
    if chunks <= 0 or not any(sc.service == "rag" and sc.phase <= phase for sc in scenarios):
        return []
    n = min(chunks, QUICK_CHUNKS) if profile == "quick" else chunks
    if progress:
        progress(f"rag: recall@{K} of HNSW against exact search over {n:,} real chunks "
                 "(embedded once by the embedding service, then cached)")
    return [info_row(settings, n, progress=progress)]

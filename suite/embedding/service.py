"""The embedding service's logic: the loaded model, the micro-batcher, limits, OpenAI form, reload.

The model is loaded once (offline, from a local directory). Every request goes through the
micro-batcher, whose encode runs in a worker thread, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram

from suite.embedding.batcher import Encoded, MicroBatcher
from suite.embedding.limits import Truncation, apply_limits
from suite.embedding.model import LoadedModel, default_model_path, load_model
from suite.embedding.schemas import EmbedRequest, OpenAIEmbeddingRequest, ReloadRequest
from suite.settings import Settings
from suite.web import ApiError

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class EmbeddingMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.batch_texts = Histogram("embedding_batch_texts", "texts per encoded batch", buckets=BATCH_BUCKETS,
                                     registry=registry)
        self.batch_requests = Histogram("embedding_batch_requests", "requests per encoded batch",
                                        buckets=BATCH_BUCKETS, registry=registry)
        self.truncations = Counter("embedding_truncations_total", "requests whose input was cut", ["kind"],
                                   registry=registry)

    def observe_batch(self, requests: int, texts: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_texts.observe(texts)


class EmbeddingService:
    """The current model and its batcher; built in the app's lifespan (``app.state.embedding``)."""

    def __init__(self, settings: Settings, model: LoadedModel, metrics: EmbeddingMetrics) -> None:
        self.settings = settings
        self.cfg = settings.embedding
        self.device = self.cfg.device or "cpu"
        self.model = model
        self.metrics = metrics
        self.reload_lock = asyncio.Lock()
        self.batcher = MicroBatcher(lambda: self.model, wait_ms=self.cfg.batch_wait_ms,
                                    max_batch=self.cfg.max_batch, on_batch=metrics.observe_batch)
        self.batcher.start()

    @classmethod
    async def open(cls, settings: Settings, metrics: EmbeddingMetrics) -> EmbeddingService:
        cfg = settings.embedding
        model = await asyncio.to_thread(load_model, default_model_path(settings), cfg.device or "cpu",
                                        cfg.model_name if cfg.model_path is None else None, cfg.loader)
        return cls(settings, model, metrics)

    async def close(self) -> None:
        await self.batcher.close()

    # -- probes ---------------------------------------------------------------------------------
    def health_info(self) -> dict[str, Any]:
        m, b = self.model, self.batcher
        # /health is open: the model folder's name, not where it lies on disk
        return {"model": m.name, "dimension": m.dimension, "device": m.device,
                "model_dir": os.path.basename(str(m.path)),
                "load_s": m.load_s, "loader": m.loader, "batches": b.batches, "texts": b.texts,
                "limits": {"max_texts": self.cfg.max_texts, "max_chars": self.cfg.max_chars}}

    async def ready(self) -> dict[str, Any]:
        out = await self.batcher.submit(["readiness probe"])
        if out.vectors.shape != (1, out.encoder.dimension) or not np.isfinite(out.vectors).all():
            raise RuntimeError(f"unexpected probe embedding shape {out.vectors.shape}")
        return {"model": out.encoder.name, "dimension": out.encoder.dimension}

    # -- requests -------------------------------------------------------------------------------
    async def _encode(self, texts: list[str]) -> tuple[list[str], Encoded, Truncation]:
        """The texts within the limits (cut ones reported and counted), encoded in a micro-batch."""
        kept, report = apply_limits(texts, self.cfg.max_texts, self.cfg.max_chars)
        if report.texts_dropped:
            self.metrics.truncations.labels("texts").inc()
        if report.cut_texts:
            self.metrics.truncations.labels("chars").inc()
        if report.truncated:
            log.warning("input truncated: %d texts dropped, %d texts cut to %d chars",
                        report.texts_dropped, len(report.cut_texts), self.cfg.max_chars)
        return kept, await self.batcher.submit(kept), report

    async def embed(self, body: EmbedRequest) -> dict[str, Any]:
        """The seed's ``/embed``: vectors, model, dimension and what was cut."""
        _, encoded, report = await self._encode(body.texts)
        enc = encoded.encoder
        return {"embeddings": encoded.vectors.tolist(), "model": enc.name, "dimension": enc.dimension,
                "count": int(encoded.vectors.shape[0]), "truncated": report.truncated,
                "truncation": report.to_dict()}

    async def openai_embeddings(self, body: OpenAIEmbeddingRequest) -> dict[str, Any]:
        """OpenAI ``/v1/embeddings``: floats or base64, token usage, truncation reported."""
        texts = openai_texts(body.input)
        model = self.model
        if body.dimensions is not None and body.dimensions != model.dimension:
            raise ApiError(400, f"'dimensions' must be {model.dimension} for model {model.name} "
                                f"(got {body.dimensions})", code="unsupported_dimensions")
        kept, encoded, report = await self._encode(texts)
        enc = encoded.encoder
        tokens = await asyncio.to_thread(enc.count_tokens, kept) if hasattr(enc, "count_tokens") else 0
        data = [{"object": "embedding", "index": i, "embedding": as_openai(vec, body.encoding_format)}
                for i, vec in enumerate(encoded.vectors)]
        return {"object": "list", "data": data, "model": enc.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}, "truncation": report.to_dict()}

    def models(self) -> dict[str, Any]:
        """OpenAI ``/v1/models``: the one model this service embeds with (a client's discovery and the
        harness's key check, as on other OpenAI-compatible embedding servers)."""
        m = self.model
        return {"object": "list", "data": [{"id": m.name, "object": "model", "owned_by": "suite-workbench",
                                            "dimension": m.dimension}]}

    async def reload(self, body: ReloadRequest) -> dict[str, Any]:
        """Load another (or the same) model and swap it in; requests keep using the old one meanwhile."""
        cfg = self.cfg
        if body.model_path and "\x00" in body.model_path:  # os.stat would raise ValueError, not OSError
            raise ApiError(400, "model_path must not contain a NUL character", code="model_not_found")
        try:
            path = Path(body.model_path).expanduser() if body.model_path else default_model_path(self.settings)
        except RuntimeError as exc:  # an unknown ~user
            raise ApiError(400, f"model_path cannot be resolved: {exc}", code="model_not_found") from None
        try:
            is_dir = path.is_dir()
        except OSError:  # e.g. a name too long (is_dir only swallows "not found")
            is_dir = False
        if not is_dir:
            raise ApiError(400, f"model_path is not a directory: {str(path)[:300]}", code="model_not_found")
        name = body.model_name or (cfg.model_name if body.model_path is None and cfg.model_path is None
                                   else None)
        async with self.reload_lock:  # one load at a time
            previous = self.model
            try:
                new = await asyncio.to_thread(load_model, path, self.device, name, self.cfg.loader)
            except Exception as exc:
                log.exception("reload of %s failed; keeping %s", path, previous.name)
                raise ApiError(400, f"could not load a sentence-transformers model from {path}: "
                                    f"{type(exc).__name__}: {exc}", code="model_load_failed") from None
            self.model = new
        log.info("embedding model swapped: %s -> %s", previous.name, new.name)
        return {"status": "reloaded", "model": new.name, "dimension": new.dimension, "model_path": new.path,
                "load_s": new.load_s, "previous": {"model": previous.name, "dimension": previous.dimension}}


def openai_texts(value: Any) -> list[str]:
    """OpenAI ``input`` as a list of strings; token arrays are not supported by this service."""
    if isinstance(value, str):
        return [value]
    if all(isinstance(v, str) for v in value):
        return list(value)
    raise ApiError(400, "'input' must be a string or a list of strings; token arrays are not supported",
                   code="unsupported_input")


def as_openai(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """A vector as OpenAI sends it: floats, or base64 of little-endian float32."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()

"""Embedding service: ``POST /embed``, OpenAI ``POST /v1/embeddings``, ``POST /reload``.

The model is loaded once in the lifespan (offline, from a local directory). Every request goes
through the micro-batcher, whose encode runs in a worker thread, so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from prometheus_client import Counter, Histogram

from suite.embedding.batcher import MicroBatcher
from suite.embedding.limits import apply_limits
from suite.embedding.model import LoadedModel, default_model_path, load_model
from suite.embedding.schemas import EmbedRequest, OpenAIEmbeddingRequest, ReloadRequest
from suite.settings import Settings
from suite.web import ApiError, instrument

log = logging.getLogger(__name__)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def create_app(settings: Settings) -> FastAPI:
    """The embedding service; the model is loaded when the app starts (its lifespan)."""
    cfg = settings.embedding
    device = cfg.device or "cpu"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        path = default_model_path(settings)
        app.state.model = await asyncio.to_thread(load_model, path, device,
                                                  cfg.model_name if cfg.model_path is None else None)
        app.state.reload_lock = asyncio.Lock()
        app.state.batcher = MicroBatcher(lambda: app.state.model, wait_ms=cfg.batch_wait_ms,
                                         max_batch=cfg.max_batch, on_batch=observe_batch)
        app.state.batcher.start()
        yield
        await app.state.batcher.close()

    app = FastAPI(title="suite embedding", lifespan=lifespan)

    def model() -> LoadedModel:
        return app.state.model

    def health_info() -> dict[str, Any]:
        m = getattr(app.state, "model", None)
        if m is None:
            return {"model": None, "dimension": None}
        b: MicroBatcher = app.state.batcher
        return {"model": m.name, "dimension": m.dimension, "device": m.device, "model_dir": os.path.basename(str(m.path)),
                "load_s": m.load_s, "batches": b.batches, "texts": b.texts,
                "limits": {"max_texts": cfg.max_texts, "max_chars": cfg.max_chars}}

    async def ready() -> dict[str, Any]:
        out = await app.state.batcher.submit(["readiness probe"])
        if out.vectors.shape != (1, out.encoder.dimension) or not np.isfinite(out.vectors).all():
            raise RuntimeError(f"unexpected probe embedding shape {out.vectors.shape}")
        return {"model": out.encoder.name, "dimension": out.encoder.dimension}

    metrics = instrument(app, "embedding", ready=ready, ready_timeout_s=cfg.ready_timeout_s, settings=settings,
                         health_info=health_info)
    batch_texts = Histogram("embedding_batch_texts", "texts per encoded batch", buckets=BATCH_BUCKETS,
                            registry=metrics.registry)
    batch_requests = Histogram("embedding_batch_requests", "requests per encoded batch",
                               buckets=BATCH_BUCKETS, registry=metrics.registry)
    truncations = Counter("embedding_truncations_total", "requests whose input was cut", ["kind"],
                          registry=metrics.registry)

    def observe_batch(requests: int, texts: int) -> None:
        batch_requests.observe(requests)
        batch_texts.observe(texts)

    async def embed(texts: list[str]):
        kept, report = apply_limits(texts, cfg.max_texts, cfg.max_chars)
        if report.texts_dropped:
            truncations.labels("texts").inc()
        if report.cut_texts:
            truncations.labels("chars").inc()
        if report.truncated:
            log.warning("input truncated: %d texts dropped, %d texts cut to %d chars",
                        report.texts_dropped, len(report.cut_texts), cfg.max_chars)
        encoded = await app.state.batcher.submit(kept)
        return kept, encoded, report

    @app.post("/embed")
    async def embed_route(body: EmbedRequest) -> dict[str, Any]:
        _, encoded, report = await embed(body.texts)
        enc = encoded.encoder
        return {"embeddings": encoded.vectors.tolist(), "model": enc.name, "dimension": enc.dimension,
                "count": int(encoded.vectors.shape[0]), "truncated": report.truncated,
                "truncation": report.to_dict()}

    @app.post("/v1/embeddings")
    async def openai_embeddings(body: OpenAIEmbeddingRequest) -> dict[str, Any]:
        texts = openai_texts(body.input)
        if body.dimensions is not None and body.dimensions != model().dimension:
            raise ApiError(400, f"'dimensions' must be {model().dimension} for model {model().name} "
                                f"(got {body.dimensions})", code="unsupported_dimensions")
        kept, encoded, report = await embed(texts)
        enc = encoded.encoder
        tokens = await asyncio.to_thread(enc.count_tokens, kept) if hasattr(enc, "count_tokens") else 0
        data = [{"object": "embedding", "index": i, "embedding": as_openai(vec, body.encoding_format)}
                for i, vec in enumerate(encoded.vectors)]
        return {"object": "list", "data": data, "model": enc.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "truncation": report.to_dict()}

    @app.post("/reload")
    async def reload(body: ReloadRequest | None = None) -> dict[str, Any]:
        body = body or ReloadRequest()
        path = Path(body.model_path).expanduser() if body.model_path else default_model_path(settings)
        if not path.is_dir():
            raise ApiError(400, f"model_path is not a directory: {path}", code="model_not_found")
        name = body.model_name or (cfg.model_name if body.model_path is None and cfg.model_path is None
                                   else None)
        async with app.state.reload_lock:  # one load at a time; requests keep using the old model
            previous = model()
            try:
                new = await asyncio.to_thread(load_model, path, device, name)
            except Exception as exc:
                log.exception("reload of %s failed; keeping %s", path, previous.name)
                raise ApiError(400, f"could not load a sentence-transformers model from {path}: "
                                    f"{type(exc).__name__}: {exc}", code="model_load_failed") from None
            app.state.model = new
        log.info("embedding model swapped: %s -> %s", previous.name, new.name)
        return {"status": "reloaded", "model": new.name, "dimension": new.dimension, "model_path": new.path,
                "load_s": new.load_s, "previous": {"model": previous.name, "dimension": previous.dimension}}

    return app


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

"""The batched inference service object: the role's model loaded, its continuous-batching engine
running, and what the routes ask of them (``BatchedModel``), with the engine's metrics.

``BatchedModel.open`` loads the model exactly as on the serial path (``model.load_llama``) and starts an
``Engine`` with ``settings.inference.slots`` sequences; ``aclose`` stops it. The routes are
``batched_app``'s, the app shape ``suite.instrument.service_app``'s.

The readiness probe's one-token completion is not inference traffic: it is submitted unmetered, so
the token and time-to-first-token metrics count clients' requests only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from suite.inference import openai_surface as oai
from suite.inference.chat_prompt import ChatTemplate
from suite.inference.choices import ChoiceStream, TokenText
from suite.inference.engine import (
    AsyncSink,
    Engine,
    EngineHooks,
    EngineOverloaded,
    EngineStopped,
    Event,
    GenerationRequest,
    Handle,
)
from suite.inference.model import kv_bytes_per_token, load_llama
from suite.inference.placement import Placement, load_log, placement
from suite.inference.sampling import SamplingParams
from suite.settings import Settings
from suite.web import ApiError

log = logging.getLogger(__name__)

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
RETRY_AFTER_S = "1"


class EngineMetrics:
    """Engine gauges and counters on the app's own registry."""

    def __init__(self, registry, service: str) -> None:
        self.active = Gauge("inference_active_slots", "slots generating or prefilling", ["service"],
                            registry=registry)
        self.waiting = Gauge("inference_queue_depth", "requests waiting for a slot", ["service"],
                             registry=registry)
        self.slots = Gauge("inference_slots", "configured slots", ["service"], registry=registry)
        self.tokens = Counter("inference_tokens_generated_total", "tokens sampled", ["service"],
                              registry=registry)
        self.ttft = Histogram("inference_time_to_first_token_seconds",
                              "submit to first sampled token", ["service"], buckets=TTFT_BUCKETS,
                              registry=registry)
        self.rejected = Counter("inference_rejected_total", "requests refused with 429", ["service"],
                                registry=registry)
        self.registry = registry
        self.service = service

    def hooks(self) -> EngineHooks:
        """The callbacks the engine thread calls (for metered requests)."""
        tokens, ttft = self.tokens.labels(self.service), self.ttft.labels(self.service)
        return EngineHooks(first_token=ttft.observe, tokens=tokens.inc)

    def watch(self, engine: Engine) -> None:
        """Read the gauges and the prefix cache's counters from the engine at scrape time."""
        self.active.labels(self.service).set_function(lambda: engine.active)
        self.waiting.labels(self.service).set_function(lambda: engine.waiting)
        self.slots.labels(self.service).set(engine.slots)
        self.registry.register(PrefixCacheCollector(engine, self.service))


class PrefixCacheCollector:
    """The engine's prefix-cache counters, read when /metrics is scraped (``Engine.cache_info``)."""

    COUNTERS = (("lookups", "inference_prefix_cache_lookups", "prompts placed in a slot"),
                ("hits", "inference_prefix_cache_hits", "prompts that started from reused KV cells"),
                ("tokens_reused", "inference_prompt_tokens_reused", "prompt tokens whose KV cells were reused"),
                ("tokens_prefilled", "inference_prompt_tokens_prefilled", "prompt tokens decoded"),
                ("cells_evicted", "inference_prefix_cache_evicted_cells", "cached KV cells dropped"))
    GAUGES = (("cells_used", "inference_kv_cells_used", "KV cells held by any sequence id"),
              ("cells_cached", "inference_prefix_cache_cells", "KV cells held only by cached prefixes"))

    def __init__(self, engine: Engine, service: str) -> None:
        self.engine = engine
        self.service = service

    def describe(self):
        return []  # names are known only once collected; no describe-time checks needed

    def collect(self):
        info = self.engine.cache_info()
        if not info:
            return
        for key, name, doc in self.COUNTERS:
            family = CounterMetricFamily(name, doc, labels=["service"])
            family.add_metric([self.service], info[key])
            yield family
        for key, name, doc in self.GAUGES:
            family = GaugeMetricFamily(name, doc, labels=["service"])
            family.add_metric([self.service], info[key])
            yield family


@dataclass
class Submission:
    """A request accepted by the engine: its handle, what was queued, where events arrive, how to answer."""

    handle: Handle
    prepared: oai.Prepared
    sink: AsyncSink
    shape: oai.CompletionShape

    @property
    def request(self) -> GenerationRequest:
        return self.prepared.request


class BatchedModel:
    """One role's model and its engine: what ``/ready``, ``/health`` and the completion routes use."""

    def __init__(self, settings: Settings, role: str, llama: Any, engine: Engine, layers: Placement,
                 load_s: float, metrics: EngineMetrics) -> None:
        self.name = f"inference-{role}"
        self.cfg = getattr(settings.inference, role)
        self.inf = settings.inference
        self.llama, self.engine, self.placement, self.load_s, self.metrics = llama, engine, layers, load_s, metrics
        kv = kv_bytes_per_token(llama)
        self.kv_mib_per_slot = round(kv * self.cfg.n_ctx / 2**20, 1) if kv else None
        self.template = ChatTemplate.load(llama, self.cfg.chat_format) if self.cfg.chat_format else None
        self.tokens = TokenText(llama._model.vocab)
        self.rng = random.Random(self.cfg.seed)
        self.model_path = str(settings.model_path(role))

    @classmethod
    async def open(cls, settings: Settings, role: str, metrics: EngineMetrics) -> BatchedModel:
        """Load the role's model (off the loop), start the engine, hook its metrics."""
        cfg, inf = getattr(settings.inference, role), settings.inference
        t0 = time.perf_counter()
        with load_log() as lines:
            llama = await asyncio.to_thread(load_llama, settings, role)
        engine = None
        try:  # whatever fails from here on, the model (and the engine, once started) is closed again
            layers = placement(llama, cfg.n_gpu_layers, lines)
            engine = Engine(llama, slots=inf.slots, queue_limit=inf.queue_limit, n_ctx=cfg.n_ctx,
                            n_batch=cfg.n_batch, batch_invariant=inf.batch_invariant,
                            hooks=metrics.hooks(), stall_s=inf.stall_s,
                            prefix_cache_tokens=inf.prefix_cache_tokens, adaptive_threads=inf.adaptive_threads)
            engine.start()
            metrics.watch(engine)
            model = cls(settings, role, llama, engine, layers, time.perf_counter() - t0, metrics)
        except BaseException:
            if engine is not None:
                engine.stop()
            llama.close()
            raise
        log.info("batched engine up: %d slots of %d tokens (KV cache %s MiB per slot), queue %d, loaded in %.1fs",
                 inf.slots, cfg.n_ctx, model.kv_mib_per_slot, inf.queue_limit, model.load_s)
        return model

    async def aclose(self) -> None:
        await asyncio.to_thread(self.engine.stop)
        self.llama.close()

    async def ready(self) -> dict[str, Any]:
        """One real token through the engine, in a slot like any request (full means not ready)."""
        request = GenerationRequest(prompt_tokens=oai.completion_prompt_tokens(self.llama, "Hello"),
                                    max_tokens=1, sampling=SamplingParams(temperature=0.0),
                                    metered=False)  # a probe is not inference traffic
        t = time.perf_counter()
        sink = AsyncSink()
        handle = self.engine.submit(request, sink)
        try:
            async with asyncio.timeout(self.inf.ready_timeout_s):
                event = await _last_event(sink)
        finally:
            handle.cancel()
        if event.error:
            raise RuntimeError(event.error)
        return {"model": self.cfg.alias, "tokens": event.completion_tokens, "engine": "batched",
                "completion_ms": round((time.perf_counter() - t) * 1000, 1)}

    def liveness(self) -> str | None:
        """Why the engine thread is not alive (dead, stuck), or None."""
        return self.engine.liveness()

    def health_info(self) -> dict[str, Any]:
        inf = self.inf
        return {"model": self.cfg.alias, "engine": "batched", "slots": inf.slots,
                "batch_invariant": inf.batch_invariant, "queue_limit": inf.queue_limit, "n_ctx": self.cfg.n_ctx,
                "kv_mib_per_slot": self.kv_mib_per_slot, "model_file": os.path.basename(self.model_path),
                "load_s": round(self.load_s, 2), "gpu_layers": self.placement.to_dict(),
                "prefix_cache": _cache_health(self.engine, inf.prefix_cache_tokens),
                "decode_threads": self.engine.threads_info()}

    async def submit(self, body: oai.Body) -> Submission:
        """Validate, tokenize, build the samplers and queue a request; 429 when the engine is full.

        Tokenizing and building (grammars, context checks) run in a worker thread: a long prompt or
        a large schema never holds the event loop, and a bad request is a 400 before it takes a
        place in the queue.
        """
        building = asyncio.ensure_future(asyncio.to_thread(
            oai.build_request, self.llama, body, self.cfg.n_ctx, self.rng, self.template, self.inf.max_tokens_cap))
        try:
            prepared = await asyncio.shield(building)
        except asyncio.CancelledError:  # the client left while its samplers were built: free them when done
            building.add_done_callback(lambda task: task.exception() is None and task.result().release())
            raise
        sink = AsyncSink()
        prepared.handed_over()  # the engine owns the samplers from here, refused or not
        try:
            handle = self.engine.submit(prepared.request, sink)
        except EngineOverloaded:
            self.metrics.rejected.labels(self.name).inc()
            raise ApiError(429, "model overloaded", code="model_overloaded",
                           headers={"Retry-After": RETRY_AFTER_S}) from None
        except EngineStopped as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from None
        except ValueError as exc:
            raise oai.bad_request(str(exc)) from None
        # a request without a model is answered with the alias, never the file's path
        shape = oai.CompletionShape(body.model if body.model is not None else self.cfg.alias, chat=prepared.chat,
                                    include_usage=prepared.include_usage)
        return Submission(handle, prepared, sink, shape)

    def choice_streams(self, sub: Submission) -> list[ChoiceStream]:
        """One ``ChoiceStream`` per choice of a request with several choices, logprobs or tools."""
        prep = sub.prepared
        tools = prep.tools is not None and prep.tools.active
        return [ChoiceStream(i, chat=prep.chat, tokens=self.tokens, logprobs=prep.logprobs is not None,
                             tools=tools, legacy=tools and prep.tools.legacy, echo=prep.prompt if prep.echo else "")
                for i in range(prep.n)]

    async def tokens_of(self, text: str) -> list[int]:
        """The model's tokens for ``text`` (off the loop); texts no prompt could be are a 400."""
        oai.check_tokenize_input(text, self.cfg.n_ctx)
        return await asyncio.to_thread(self.llama.tokenize, text.encode("utf-8"), True, True)


def _cache_health(engine: Engine | None, budget: int | None) -> dict[str, Any] | None:
    """/health's view of the prefix cache: its counters, its budget and the share of prompt tokens reused."""
    info = engine.cache_info() if engine is not None else {}
    if not info:
        return None
    prompt = info["tokens_reused"] + info["tokens_prefilled"]
    return {**info, "budget_cells": budget, "reused_ratio": round(info["tokens_reused"] / prompt, 3) if prompt else None}


async def _last_event(sink: AsyncSink) -> Event:
    while True:
        event = await sink.get()
        if event.final:
            return event


__all__ = ["BatchedModel", "EngineMetrics", "PrefixCacheCollector", "Submission"]

"""The default inference service: the continuous-batching engine behind llama_cpp.server's OpenAI surface.

Routes, request types and response shapes are llama-cpp-python's (see ``openai_surface``), extended
to llama-server's level (tools, structured outputs, logprobs, ``n``, usage in streams: ``choices``);
the model is loaded by ``model.load_llama`` exactly as on the serial path, and the engine gets a
context of its own with ``settings.inference.slots`` sequences. Requests beyond the slots wait in a
bounded line (``queue_limit``); past that, 429 with Retry-After.

The readiness probe's one-token completion is not inference traffic: it is submitted unmetered, so
the token and time-to-first-token metrics count clients' requests only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from llama_cpp.server.types import TokenizeInputCountResponse, TokenizeInputResponse
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
from suite.inference.placement import load_log, placement
from suite.inference.request_types import ChatCompletionRequest, CompletionRequest, TokenizeRequest
from suite.inference.sampling import SamplingParams
from suite.instrument import instrument
from suite.settings import ModelConfig, Settings
from suite.web import ApiError

log = logging.getLogger(__name__)

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DISCONNECT_POLL_S = 0.5
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


def create_batched_app(settings: Settings, role: str = "chat") -> FastAPI:
    """FastAPI app: /v1/completions, /v1/chat/completions, /v1/models over the batching engine."""
    cfg: ModelConfig = getattr(settings.inference, role)
    name = f"inference-{role}"
    inf = settings.inference
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        t0 = time.perf_counter()
        with load_log() as lines:
            llama = await asyncio.to_thread(load_llama, settings, role)
        state["placement"] = placement(llama, cfg.n_gpu_layers, lines)
        engine = Engine(llama, slots=inf.slots, queue_limit=inf.queue_limit, n_ctx=cfg.n_ctx,
                        n_batch=cfg.n_batch, batch_invariant=inf.batch_invariant,
                        hooks=engine_metrics.hooks(), stall_s=inf.stall_s,
                        prefix_cache_tokens=inf.prefix_cache_tokens, adaptive_threads=inf.adaptive_threads)
        engine.start()
        engine_metrics.watch(engine)
        kv = kv_bytes_per_token(llama)
        state.update(llama=llama, engine=engine, load_s=time.perf_counter() - t0,
                     kv_mib_per_slot=round(kv * cfg.n_ctx / 2**20, 1) if kv else None,
                     template=ChatTemplate.load(llama, cfg.chat_format) if cfg.chat_format else None,
                     tokens=TokenText(llama._model.vocab), rng=random.Random(cfg.seed),
                     model_path=str(settings.model_path(role)))
        app.state.engine = engine
        log.info("batched engine up: %d slots of %d tokens (KV cache %s MiB per slot), queue %d, loaded in %.1fs",
                 inf.slots, cfg.n_ctx, state["kv_mib_per_slot"], inf.queue_limit, state["load_s"])
        try:
            yield
        finally:
            await asyncio.to_thread(engine.stop)
            llama.close()

    app = FastAPI(title="suite inference (batched)", lifespan=lifespan)
    budget = inf.ready_timeout_s

    async def ready() -> dict[str, Any]:
        engine: Engine | None = state.get("engine")
        if engine is None:
            raise RuntimeError("model not loaded yet")
        llama = state["llama"]
        request = GenerationRequest(prompt_tokens=oai.completion_prompt_tokens(llama, "Hello"),
                                    max_tokens=1, sampling=SamplingParams(temperature=0.0),
                                    metered=False)  # a probe is not inference traffic
        t = time.perf_counter()
        sink = AsyncSink()
        handle = engine.submit(request, sink)  # a slot like any request: full means not ready
        try:
            async with asyncio.timeout(budget):
                event = await _last_event(sink)
        finally:
            handle.cancel()
        if event.error:
            raise RuntimeError(event.error)
        return {"model": cfg.alias, "tokens": event.completion_tokens, "engine": "batched",
                "completion_ms": round((time.perf_counter() - t) * 1000, 1)}

    def live() -> str | None:
        engine: Engine | None = state.get("engine")
        return engine.liveness() if engine is not None else None

    metrics = instrument(app, name, ready=ready, ready_timeout_s=budget + 5, live=live, settings=settings,
                         health_info=lambda: {"model": cfg.alias, "engine": "batched", "slots": inf.slots,
                                              "batch_invariant": inf.batch_invariant,
                                              "queue_limit": inf.queue_limit, "n_ctx": cfg.n_ctx,
                                              "kv_mib_per_slot": state.get("kv_mib_per_slot"),
                                              "model_file": os.path.basename(state.get("model_path", "")),
                                              "load_s": round(state.get("load_s", 0.0), 2),
                                              "gpu_layers": state["placement"].to_dict()
                                              if "placement" in state else None,
                                              "prefix_cache": _cache_health(state.get("engine"),
                                                                            inf.prefix_cache_tokens),
                                              "decode_threads": state["engine"].threads_info()
                                              if "engine" in state else None})
    engine_metrics = app.state.engine_metrics = EngineMetrics(metrics.registry, name)

    async def submit(body: oai.Body) -> Submission:
        """Validate, tokenize, build the samplers and queue a request; 429 when the engine is full.

        Tokenizing and building (grammars, context checks) run in a worker thread: a long prompt or
        a large schema never holds the event loop, and a bad request is a 400 before it takes a
        place in the queue.
        """
        engine: Engine | None = state.get("engine")
        if engine is None:
            raise ApiError(503, "model not loaded yet", headers={"Retry-After": "5"})
        building = asyncio.ensure_future(asyncio.to_thread(
            oai.build_request, state["llama"], body, cfg.n_ctx, state["rng"], state["template"], inf.max_tokens_cap))
        try:
            prepared = await asyncio.shield(building)
        except asyncio.CancelledError:  # the client left while its samplers were built: free them when done
            building.add_done_callback(lambda task: task.exception() is None and task.result().release())
            raise
        sink = AsyncSink()
        prepared.handed_over()  # the engine owns the samplers from here, refused or not
        try:
            handle = engine.submit(prepared.request, sink)
        except EngineOverloaded:
            engine_metrics.rejected.labels(name).inc()
            raise ApiError(429, "model overloaded", code="model_overloaded",
                           headers={"Retry-After": RETRY_AFTER_S}) from None
        except EngineStopped as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from None
        except ValueError as exc:
            raise oai.bad_request(str(exc)) from None
        # a request without a model is answered with the alias, never the file's path
        shape = oai.CompletionShape(body.model if body.model is not None else cfg.alias, chat=prepared.chat,
                                    include_usage=prepared.include_usage)
        return Submission(handle, prepared, sink, shape)

    def choice_streams(sub: Submission) -> list[ChoiceStream]:
        prep = sub.prepared
        tools = prep.tools is not None and prep.tools.active
        return [ChoiceStream(i, chat=prep.chat, tokens=state["tokens"], logprobs=prep.logprobs is not None,
                             tools=tools, legacy=tools and prep.tools.legacy, echo=prep.prompt if prep.echo else "")
                for i in range(prep.n)]

    async def complete(request: Request, body: oai.Body):
        """Both completion routes: an SSE stream, or one completion (a chat one for chat)."""
        sub = await submit(body)
        prep = sub.prepared
        if body.stream:
            return _sse(_stream(sub) if prep.plain else _stream_choices(sub, choice_streams(sub)))
        if not prep.plain:
            streams = choice_streams(sub)
            finals = await _collect(request, sub, lambda event: streams[event.index].feed(event))
            return sub.shape.whole([s.choice() for s in streams], len(sub.request.prompt_tokens),
                                   sum(e.completion_tokens for e in finals))
        parts: list[str] = []
        (event,) = await _collect(request, sub, lambda e: parts.append(e.text))
        text = "".join(parts)
        if prep.echo:
            text = prep.prompt + text
        out = sub.shape.completion(text, event.finish_reason, len(sub.request.prompt_tokens),
                                   event.completion_tokens)
        return oai.chat_completion(out) if prep.chat else out

    @app.post("/v1/completions", summary="Completion")
    async def create_completion(request: Request, body: CompletionRequest):
        return await complete(request, body)

    @app.post("/v1/chat/completions", summary="Chat")
    async def create_chat_completion(request: Request, body: ChatCompletionRequest):
        return await complete(request, body)

    async def tokens_of(text: str) -> list[int]:
        """The model's tokens for ``text`` (off the loop); texts no prompt could be are a 400."""
        llama = state.get("llama")
        if llama is None:
            raise ApiError(503, "model not loaded yet", headers={"Retry-After": "5"})
        oai.check_tokenize_input(text, cfg.n_ctx)
        return await asyncio.to_thread(llama.tokenize, text.encode("utf-8"), True, True)

    @app.post("/extras/tokenize", summary="Tokenize", tags=["Extras"])
    async def tokenize(body: TokenizeRequest) -> TokenizeInputResponse:
        return TokenizeInputResponse(tokens=await tokens_of(body.input))

    @app.post("/extras/tokenize/count", summary="Tokenize Count", tags=["Extras"])
    async def tokenize_count(body: TokenizeRequest) -> TokenizeInputCountResponse:
        return TokenizeInputCountResponse(count=len(await tokens_of(body.input)))

    @app.get("/v1/models", summary="Models")
    async def get_models() -> dict[str, Any]:
        return {"object": "list",
                "data": [{"id": cfg.alias, "object": "model", "owned_by": "me", "permissions": []}]}

    return app


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


async def _collect(request: Request, sub: Submission, on_event) -> list[Event]:
    """Every event of a non-streamed request (``on_event`` each), until each choice's final one
    (returned, in order of arrival); a client that goes away cancels its sequences."""
    finals: list[Event] = []
    try:
        while True:
            try:
                events = await sub.sink.get_all(DISCONNECT_POLL_S)
            except TimeoutError:
                if await request.is_disconnected():
                    raise asyncio.CancelledError from None
                continue
            for event in events:
                if event.error:
                    raise ApiError(500, event.error, type="internal_error")
                on_event(event)
                if event.final:
                    finals.append(event)
                    if len(finals) == sub.prepared.n:
                        return finals
    except BaseException:
        sub.handle.cancel()
        raise


async def _stream(sub: Submission) -> AsyncIterator[bytes]:
    """SSE lines as llama_cpp.server sends them: one ``data: {json}`` per chunk, then ``[DONE]``
    (with ``stream_options.include_usage``, a usage chunk before it).

    Whatever arrived since the last write goes out in one write (one token per stream per step in
    the steady state; more when the client or the loop fell behind).
    """
    shape, first, done = sub.shape, True, False
    if sub.prepared.echo:
        yield shape.sse(sub.prepared.prompt, None, True).encode()
        first = False
    try:
        while not done:
            lines = []
            for event in await sub.sink.get_all():
                if event.error:
                    lines.append(_error(event.error))
                    done = True
                    break
                if event.text:
                    lines.append(shape.sse(event.text, None, first) if first else shape.sse_text(event.text))
                    first = False
                if event.final:
                    lines.append(shape.sse("", event.finish_reason, first))
                    if shape.include_usage:
                        lines.append(shape.sse_usage(len(sub.request.prompt_tokens), event.completion_tokens))
                    done = True
                    break
            if done:
                lines.append("data: [DONE]\n\n")
            if lines:
                yield "".join(lines).encode()
    finally:
        sub.handle.cancel()  # no-op when finished; frees the slot when the client went away


async def _stream_choices(sub: Submission, streams: list[ChoiceStream]) -> AsyncIterator[bytes]:
    """The stream of a request with several choices, logprobs or tools: one chunk per choice and
    event (``ChoiceStream``), a usage chunk if asked, then ``[DONE]``."""
    shape, left, used = sub.shape, sub.prepared.n, 0
    try:
        while left:
            lines = []
            for event in await sub.sink.get_all():
                if event.error:
                    lines.append(_error(event.error))
                    left = 0
                    break
                lines.extend(shape.sse_choice(choice) for choice in streams[event.index].feed(event))
                if event.final:
                    used += event.completion_tokens
                    left -= 1
                    if not left and shape.include_usage:
                        lines.append(shape.sse_usage(len(sub.request.prompt_tokens), used))
            if not left:
                lines.append("data: [DONE]\n\n")
            if lines:
                yield "".join(lines).encode()
    finally:
        sub.handle.cancel()


def _error(message: str) -> str:
    return _data({"error": {"message": message, "type": "internal_error", "code": None}})


def _data(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def _sse(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


__all__ = ["EngineMetrics", "PrefixCacheCollector", "Submission", "create_batched_app"]

"""The default inference service: the continuous-batching engine behind llama_cpp.server's OpenAI surface.

Routes, request types and response shapes are llama-cpp-python's (see ``openai_surface``), extended
to llama-server's level (tools, structured outputs, logprobs, ``n``, usage in streams: ``choices``).
The service object is ``batched_model.BatchedModel`` (the model loaded as on the serial path, an
``Engine`` with ``settings.inference.slots`` sequences); the app is ``suite.instrument.service_app``
with the routes below. Requests beyond the slots wait in a bounded line (``queue_limit``); past that,
429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from llama_cpp.server.types import TokenizeInputCountResponse, TokenizeInputResponse

from suite.inference import openai_surface as oai
from suite.inference.batched_model import BatchedModel, EngineMetrics, Submission
from suite.inference.choices import ChoiceStream
from suite.inference.engine import Event
from suite.inference.request_types import ChatCompletionRequest, CompletionRequest, TokenizeRequest
from suite.instrument import service_app
from suite.settings import Settings
from suite.web import ApiError

DISCONNECT_POLL_S = 0.5


def _model(request: Request) -> BatchedModel:
    """The app's ``BatchedModel`` (``app.state.inference-<role>``, named by the service)."""
    return getattr(request.app.state, request.app.state.service_name)


Model = Annotated[BatchedModel, Depends(_model)]
router = APIRouter()


def create_batched_app(settings: Settings, role: str = "chat") -> FastAPI:
    """FastAPI app: /v1/completions, /v1/chat/completions, /v1/models, /extras/tokenize over the engine."""
    name = f"inference-{role}"
    app = service_app(name, settings, lambda app: BatchedModel.open(settings, role, app.state.engine_metrics),
                      router=router, ready_timeout_s=settings.inference.ready_timeout_s + 5)
    app.state.engine_metrics = EngineMetrics(app.state.metrics.registry, name)
    return app


async def _complete(model: BatchedModel, request: Request, body: oai.Body):
    """Both completion routes: an SSE stream, or one completion (a chat one for chat)."""
    sub = await model.submit(body)
    prep = sub.prepared
    if body.stream:
        return _sse(_stream(sub) if prep.plain else _stream_choices(sub, model.choice_streams(sub)))
    if not prep.plain:
        streams = model.choice_streams(sub)
        finals = await _collect(request, sub, lambda event: streams[event.index].feed(event))
        return sub.shape.whole([s.choice() for s in streams], len(sub.request.prompt_tokens),
                               sum(e.completion_tokens for e in finals))
    parts: list[str] = []
    (event,) = await _collect(request, sub, lambda e: parts.append(e.text))
    text = "".join(parts)
    if prep.echo:
        text = prep.prompt + text
    out = sub.shape.completion(text, event.finish_reason, len(sub.request.prompt_tokens), event.completion_tokens)
    return oai.chat_completion(out) if prep.chat else out


@router.post("/v1/completions", summary="Completion")
async def create_completion(request: Request, body: CompletionRequest, model: Model):
    return await _complete(model, request, body)


@router.post("/v1/chat/completions", summary="Chat")
async def create_chat_completion(request: Request, body: ChatCompletionRequest, model: Model):
    return await _complete(model, request, body)


@router.post("/extras/tokenize", summary="Tokenize", tags=["Extras"])
async def tokenize(body: TokenizeRequest, model: Model) -> TokenizeInputResponse:
    return TokenizeInputResponse(tokens=await model.tokens_of(body.input))


@router.post("/extras/tokenize/count", summary="Tokenize Count", tags=["Extras"])
async def tokenize_count(body: TokenizeRequest, model: Model) -> TokenizeInputCountResponse:
    return TokenizeInputCountResponse(count=len(await model.tokens_of(body.input)))


@router.get("/v1/models", summary="Models")
async def get_models(model: Model) -> dict[str, Any]:
    return {"object": "list",
            "data": [{"id": model.cfg.alias, "object": "model", "owned_by": "me", "permissions": []}]}


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


__all__ = ["create_batched_app", "router"]

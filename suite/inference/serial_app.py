"""The serial inference path: ``llama_cpp.server``'s own OpenAI app (not rewritten) plus our probes.

One request at a time behind ``llama_cpp.server``'s global lock (``inference.engine = "serial"``).
``llama_cpp.server`` keeps its model and locks in module globals, so there is exactly one such
service per process; the supervisor runs chat and code as two processes.

It keeps llama_cpp.server's behaviour except where that would lose a client's input or leak the
server's: chat prompts are rendered by ``chat_prompt`` (system messages kept, a message the format
cannot hold a 400, as on the batched engine), and a reply to a request without ``model`` is named
with the alias, not the GGUF's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

import anyio
import llama_cpp
from fastapi import FastAPI
from llama_cpp import llama_chat_format
from starlette.concurrency import run_in_threadpool

from suite.inference.chat_prompt import ChatTemplate, PromptError
from suite.inference.model import (
    cap_max_tokens,
    client_errors_are_4xx,
    fresh_context_per_request,
    llama_model_settings,
    name_replies,
)
from suite.inference.openai_surface import check_tokenize_input
from suite.inference.placement import load_log, placement
from suite.inference.sampling import SamplerError, SamplingParams, build_sampler, free_sampler
from suite.instrument import instrument
from suite.settings import ModelConfig, Settings
from suite.web import ApiError
from suite.web.errors import error_response
from suite.web.guard import read_body, replay

log = logging.getLogger(__name__)


def create_serial_app(settings: Settings, role: str) -> FastAPI:
    """``llama_cpp.server.app.create_app`` over the role's model, with /health, /ready, /metrics."""
    from llama_cpp.server import app as llama_app
    from llama_cpp.server.settings import ServerSettings

    name = f"inference-{role}"
    cfg: ModelConfig = getattr(settings.inference, role)
    model_settings = llama_model_settings(settings, role)
    t0 = time.perf_counter()
    log.info("loading %s model %s", role, model_settings.model)
    server_settings = ServerSettings(host=settings.host, port=settings.port(name), interrupt_requests=False)
    with load_log() as lines:
        app = llama_app.create_app(server_settings=server_settings, model_settings=[model_settings])
    llama = llama_app._llama_proxy(None)
    layers = placement(llama, cfg.n_gpu_layers, lines)
    fresh_context_per_request(llama)
    cap_max_tokens(llama, settings.inference.max_tokens_cap)
    name_replies(llama, cfg.alias)
    template = ChatTemplate.load(llama, cfg.chat_format) if cfg.chat_format else None
    if template is not None:
        llama.chat_handler = llama_chat_format.chat_formatter_to_chat_completion_handler(
            template.formatter_keeping_messages())
    client_errors_are_4xx(app)
    app.add_middleware(SerialRequestChecks, llama=llama, n_ctx=cfg.n_ctx, template=template)
    load_s = time.perf_counter() - t0
    log.info("model loaded in %.1fs", load_s)
    budget = settings.inference.ready_timeout_s

    async def ready() -> dict[str, Any]:
        # Wait for the model lock within the budget, then run one real token. The completion itself
        # is shielded: cancelling it mid-way would release the lock while llama.cpp still runs.
        with anyio.fail_after(budget):
            async with contextlib.asynccontextmanager(llama_app.get_llama_proxy)() as proxy:
                with anyio.CancelScope(shield=True):
                    t = time.perf_counter()
                    out = await run_in_threadpool(proxy(None), "Hello", max_tokens=1, temperature=0.0)
                    return {"model": cfg.alias, "tokens": out["usage"]["completion_tokens"],
                            "completion_ms": round((time.perf_counter() - t) * 1000, 1)}

    instrument(app, name, ready=ready, ready_timeout_s=budget + 60, settings=settings,
               health_info=lambda: {"model": cfg.alias, "model_file": os.path.basename(model_settings.model),
                                    "engine": "serial", "load_s": round(load_s, 2),
                                    "gpu_layers": layers.to_dict()})
    return app


class SerialRequestChecks:
    """What llama_cpp.server's routes do not check, checked before they run (plain ASGI):

    - a ``grammar`` that does not parse: its route would answer 500;
    - ``/extras/detokenize`` with a token id outside the vocabulary: llama.cpp would abort the whole
      process (``std::out_of_range`` thrown through its C API);
    - ``/extras/tokenize`` of more text than any prompt could be: it tokenizes on the event loop;
    - ``/v1/completions`` with several prompts: its route asserts one (an AssertionError, 500);
    - chat messages the chat format cannot hold (``chat_prompt``): the chat handler would raise (a 500).

    Each is a 400 here; the check runs in a worker thread (a grammar is parsed by llama.cpp).
    """

    PATHS = ("/v1/completions", "/v1/chat/completions", "/extras/detokenize", "/extras/tokenize",
             "/extras/tokenize/count")

    def __init__(self, app, llama, n_ctx: int, template: ChatTemplate | None = None) -> None:
        self.app, self.llama, self.n_ctx, self.template = app, llama, n_ctx, template

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.PATHS:
            body = await read_body(scope, receive, limit=1 << 62)  # the request guard bounded it
            try:
                await asyncio.to_thread(self.check, scope["path"], body or b"null")
            except ApiError as exc:
                await error_response(exc.status, exc.message, code=exc.code)(scope, receive, send)
                return
            receive = replay(body or b"", receive)
        await self.app(scope, receive, send)

    def check(self, path: str, raw: bytes) -> None:
        body = json.loads(raw)
        if not isinstance(body, dict):
            return  # the route's own validation answers
        if path == "/extras/detokenize":
            n_vocab = self.llama.n_vocab()
            tokens = body.get("tokens")
            if isinstance(tokens, list) and any(isinstance(t, int) and not 0 <= t < n_vocab for t in tokens):
                raise ApiError(400, f"tokens must be ids of this model's vocabulary (0..{n_vocab - 1})",
                               code="invalid_token")
        elif path.startswith("/extras/tokenize"):
            if isinstance(body.get("input"), str):
                check_tokenize_input(body["input"], self.n_ctx)
        elif path == "/v1/completions" and isinstance(body.get("prompt"), list) and len(body["prompt"]) > 1:
            raise ApiError(400, "one prompt per request", code="invalid_parameters")
        elif path == "/v1/chat/completions" and self.template is not None and isinstance(body.get("messages"), list):
            try:
                self.template.render(body["messages"])
            except PromptError as exc:
                raise ApiError(400, str(exc), code="invalid_parameters") from None
        bias = body.get("logit_bias")
        if isinstance(bias, dict) and body.get("logit_bias_type") != "tokens":
            n_vocab = self.llama.n_vocab()
            if any(not 0 <= _token_id(k) < n_vocab for k in bias):
                raise ApiError(400, f"logit_bias keys must be token ids of this model's vocabulary "
                                    f"(0..{n_vocab - 1})", code="invalid_token")
        if isinstance(body.get("grammar"), str):
            vocab = llama_cpp.llama_model_get_vocab(self.llama.model)
            try:
                free_sampler(build_sampler(SamplingParams(grammar=body["grammar"]), vocab, self.llama.n_vocab()))
            except SamplerError as exc:
                raise ApiError(400, f"invalid sampling parameters: {exc}", code="invalid_sampling") from None


def _token_id(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        return -1


__all__ = ["SerialRequestChecks", "create_serial_app"]

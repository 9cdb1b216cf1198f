"""Inference service: ``llama_cpp.server``'s OpenAI app (not rewritten) with our probes added.

``llama_cpp.server`` keeps its model and locks in module globals, so there is exactly one inference
service per process; the supervisor runs chat and code as two processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from suite.settings import ModelConfig, Settings
from suite.web import instrument

log = logging.getLogger(__name__)


def llama_model_settings(settings: Settings, role: str):
    """``llama_cpp.server`` ModelSettings for the 'chat' or 'code' model."""
    from llama_cpp.server.settings import ModelSettings

    cfg: ModelConfig = getattr(settings.inference, role)
    path = settings.model_path(role)
    if not path.is_file():
        raise FileNotFoundError(
            f"model file for '{role}' not found: {path} (run `suite models install`, "
            f"or set inference.{role}.path)"
        )
    return ModelSettings(
        model=str(path),
        model_alias=cfg.alias,
        chat_format=cfg.chat_format,
        n_ctx=cfg.n_ctx,
        n_batch=cfg.n_batch,
        n_threads=cfg.n_threads or os.cpu_count() or 1,
        n_threads_batch=cfg.n_threads or os.cpu_count() or 1,
        n_gpu_layers=cfg.n_gpu_layers or 0,
        seed=cfg.seed,
        verbose=False,
    )


def fresh_context_per_request(llama) -> None:
    """Start every generation from an empty KV cache when the model uses sliding-window attention.

    llama-cpp-python reuses the longest common prompt prefix of the previous request. With Gemma 3's
    interleaved SWA cache that partial reuse gives different tokens than a fresh context (measured:
    the same greedy prompt answers differently after an unrelated request), so the answer would
    depend on who asked before. ``reset()`` drops the reuse; the cost is re-reading the prompt.
    """
    import llama_cpp

    if llama_cpp.llama_model_n_swa(llama.model) <= 0:
        return
    original = llama.generate

    def generate(tokens, *args, **kwargs):
        llama.reset()
        return original(tokens, *args, **kwargs)

    llama.generate = generate


def client_errors_are_4xx(app: FastAPI) -> None:
    """Keep a client's mistake a 4xx on llama_cpp.server's routes.

    Its route handler catches every exception, request validation included, and answers 500; and it
    re-reads the body as JSON while doing so, which fails again on a body that is not JSON. This
    adapter (the narrowest place: its error mapper, plus a JSON check before the route) answers 400
    in the same error shape instead.
    """
    from fastapi.exceptions import RequestValidationError
    from llama_cpp.server.errors import RouteErrorHandler

    from suite.web.errors import _validation_message, error_response

    original = RouteErrorHandler.error_message_wrapper
    if not getattr(original, "_suite_adapter", False):
        def error_message_wrapper(self, error, body=None):
            if isinstance(error, RequestValidationError):
                return 400, {"message": _validation_message(error), "type": "invalid_request_error",
                             "param": None, "code": "invalid_parameters"}
            return original(self, error, body)

        error_message_wrapper._suite_adapter = True
        RouteErrorHandler.error_message_wrapper = error_message_wrapper

    @app.middleware("http")
    async def _json_bodies_only(request, call_next):
        if request.method == "POST" and request.url.path.startswith(("/v1/", "/extras/")):
            raw = await request.body()
            try:
                json.loads(raw or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                return error_response(400, f"request body is not valid JSON: {exc}")
        return await call_next(request)


def create_app(settings: Settings, role: str = "chat") -> FastAPI:
    if role not in ("chat", "code"):
        raise ValueError(f"role must be 'chat' or 'code' (got {role!r})")
    if settings.inference.engine == "batched":
        from suite.inference.batched_app import create_batched_app

        return create_batched_app(settings, role)
    return create_serial_app(settings, role)


def create_serial_app(settings: Settings, role: str) -> FastAPI:
    """The serial path: one request at a time behind llama_cpp.server's global lock."""
    from llama_cpp.server import app as llama_app
    from llama_cpp.server.settings import ServerSettings

    name = f"inference-{role}"
    model_settings = llama_model_settings(settings, role)
    t0 = time.perf_counter()
    log.info("loading %s model %s", role, model_settings.model)
    server_settings = ServerSettings(host=settings.host, port=settings.port(name), interrupt_requests=False)
    app = llama_app.create_app(server_settings=server_settings, model_settings=[model_settings])
    fresh_context_per_request(llama_app._llama_proxy(None))
    client_errors_are_4xx(app)
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

    cfg: ModelConfig = getattr(settings.inference, role)
    instrument(app, name, ready=ready, ready_timeout_s=budget + 60,
               health_info=lambda: {"model": cfg.alias, "model_file": os.path.basename(model_settings.model),
                                    "engine": "serial", "load_s": round(load_s, 2)})
    return app

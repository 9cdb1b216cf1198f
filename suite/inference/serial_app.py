"""The serial inference path: ``llama_cpp.server``'s own OpenAI app (not rewritten) plus our probes.

One request at a time behind ``llama_cpp.server``'s global lock (``inference.engine = "serial"``).
``llama_cpp.server`` keeps its model and locks in module globals, so there is exactly one such
service per process; the supervisor runs chat and code as two processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from suite.inference.model import client_errors_are_4xx, fresh_context_per_request, llama_model_settings
from suite.inference.placement import load_log, placement
from suite.settings import ModelConfig, Settings
from suite.web import instrument

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

    instrument(app, name, ready=ready, ready_timeout_s=budget + 60,
               health_info=lambda: {"model": cfg.alias, "model_file": os.path.basename(model_settings.model),
                                    "engine": "serial", "load_s": round(load_s, 2),
                                    "gpu_layers": layers.to_dict()})
    return app


__all__ = ["create_serial_app"]

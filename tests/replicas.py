"""Stand-in inference replicas for the gateway's tests: small FastAPI apps that answer what the test
sets in their ``Control`` (status, delay, a stream that breaks, the load they report) and count calls.

They speak the parts of an inference service the gateway uses: ``/v1/chat/completions`` (JSON or an
SSE stream of ``n`` events), ``/ready``, and ``/metrics`` with the batched engine's slot gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from suite.gateway.app import create_app
from suite.testing import ServerThread, stack_settings


@dataclass
class Control:
    status: int = 200
    retry_after: str | None = None
    delay_s: float = 0.0
    ready: bool = True
    ready_status: int | None = None  # /ready answers this instead (401: a path that needs a key)
    slots: int | None = None  # reported on /metrics when set
    busy: int = 0
    events: int = 3  # SSE events of a streamed answer
    break_after: int | None = None  # a stream dies after this many events (0: before the first)
    calls: Counter = field(default_factory=Counter)
    active: int = 0
    most_active: int = 0


def replica(name: str, ctl: Control) -> FastAPI:
    app = FastAPI()

    @app.get("/ready")
    async def ready():
        if ctl.ready_status is not None:
            return JSONResponse({"error": {"message": "no", "type": "x", "code": None}}, status_code=ctl.ready_status)
        return JSONResponse({"status": "ready"} if ctl.ready else {"status": "not_ready"},
                            status_code=200 if ctl.ready else 503)

    @app.get("/metrics")
    async def metrics():
        if ctl.slots is None:
            return PlainTextResponse("# nothing about slots here\n")
        return PlainTextResponse(f'inference_slots{{service="{name}"}} {ctl.slots}\n'
                                 f'inference_active_slots{{service="{name}"}} {min(ctl.busy, ctl.slots)}\n'
                                 f'inference_queue_depth{{service="{name}"}} {max(0, ctl.busy - ctl.slots)}\n')

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        ctl.calls[name] += 1
        ctl.active += 1
        ctl.most_active = max(ctl.most_active, ctl.active)
        try:
            await asyncio.sleep(ctl.delay_s)
        finally:
            ctl.active -= 1
        if ctl.status != 200:
            headers = {"Retry-After": ctl.retry_after} if ctl.retry_after else {}
            return JSONResponse({"error": {"message": f"{name} says {ctl.status}", "type": "x",
                                           "code": f"c{ctl.status}"}}, status_code=ctl.status, headers=headers)
        if body.get("stream"):
            async def events():
                for i in range(ctl.events):
                    if i == ctl.break_after:
                        raise RuntimeError(f"{name} died mid-stream")
                    yield f'data: {{"n": {i}, "by": "{name}"}}\n\n'.encode()
                    await asyncio.sleep(0.05)
                yield b"data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        return {"object": "chat.completion", "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": name}, "finish_reason": "stop"}]}

    return app


@contextlib.contextmanager
def pool_gateway(tmp_path, n: int = 2, code: bool = True, pools_extra: list[dict] | None = None, **gw):
    """A gateway whose chat pool is ``n`` stand-in replicas (``chat-1`` ...) plus ``pools_extra`` and
    whose code alias is one more (``code``); yields (gateway URL, {name: Control}, {name: server}). Auth
    off: the rules under test are the gateway's own."""
    ctls = {f"chat-{i + 1}": Control() for i in range(n)}
    ctls["code"] = Control()
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(ServerThread(replica(name, ctl))) for name, ctl in ctls.items()}
        pools = {"chat": [{"url": servers[f"chat-{i + 1}"].url, "name": f"chat-{i + 1}"} for i in range(n)]
                 + list(pools_extra or [])}
        if code:
            pools["code"] = [{"url": servers["code"].url, "name": "code"}]
        settings = stack_settings(tmp_path, auth={"enabled": False}, gateway={
            "retries": 0, "retry_backoff_s": 0.0, "cooldown_s": 60, "recovery_probe_s": 0.2,
            "fallback": {"chat": "code"}, "load_probe_s": 0.2, "pools": pools, **gw})
        gateway = stack.enter_context(ServerThread(create_app(settings)))
        yield gateway.url, ctls, servers


def ask(url: str, stream: bool = False, timeout: float = 30) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=timeout,
                      json={"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})


def served_by(r: httpx.Response) -> str:
    return r.headers.get("x-suite-replica", "")


def metric(url: str, name: str, **labels: str) -> float:
    """A sample of the gateway's /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def health(url: str) -> dict:
    return httpx.get(url + "/health").json()

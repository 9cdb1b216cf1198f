"""A client that goes away stops the work done for it: the gateway and RAG cancel their upstream call.

Measured before the fix in a load run: RAG requests whose clients had timed out kept all four slots
of inference-chat generating for nobody, and the next scenario waited behind them.
"""

from __future__ import annotations

import asyncio
import time

import httpx
from fastapi import FastAPI, Request

from suite.testing import ServerThread, auth, serve, stack_settings


def slow_upstream(seen: dict[str, float]) -> FastAPI:
    """Stands for inference-chat: holds a completion for up to 20 s, noting when its client left."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        seen["started"] = time.monotonic()
        for _ in range(200):
            if await request.is_disconnected():
                seen["gone"] = time.monotonic()
                return {}
            await asyncio.sleep(0.1)
        return {"choices": []}

    return app


def test_a_client_that_leaves_the_gateway_stops_the_upstream_request(tmp_path):
    settings = stack_settings(tmp_path, gateway={"retries": 0})
    seen: dict[str, float] = {}
    with ServerThread(slow_upstream(seen), port=settings.port("inference-chat")), serve(settings, "gateway"):
        headers = auth(settings, "guest")
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
        try:
            httpx.post(settings.url("gateway") + "/v1/chat/completions", json=body, headers=headers, timeout=1.5)
        except httpx.ReadTimeout:
            left = time.monotonic()  # the client gave up and closed its connection
        deadline = time.monotonic() + 5
        while "gone" not in seen and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "gone" in seen, "the upstream kept working for a client that had left"
        assert seen["gone"] - left < 3.0
        # the gateway still serves: the next request is answered
        ok = httpx.get(settings.url("gateway") + "/v1/models", headers=headers, timeout=5)
        assert ok.status_code == 200


def test_until_disconnected_returns_the_work_when_the_client_stays():
    from suite.web.disconnect import until_disconnected

    app = FastAPI()

    @app.get("/work")
    async def work(request: Request) -> dict:
        async def job() -> dict:
            await asyncio.sleep(0.8)  # longer than one poll: the loop goes round at least once
            return {"done": True}

        return await until_disconnected(request, job(), poll_s=0.2)

    with ServerThread(app) as server:
        assert httpx.get(server.url + "/work", timeout=5).json() == {"done": True}

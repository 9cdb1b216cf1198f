"""A client that goes away stops the work done for it: the gateway and RAG cancel their upstream call.

Measured before the fix in a load run: RAG requests whose clients had timed out kept all four slots
of inference-chat generating for nobody, and the next scenario waited behind them.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

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


@pytest.mark.integration
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


def streaming_upstream(seen: dict[str, float], break_after: int | None = None) -> FastAPI:
    """Stands for inference-chat streaming 200 SSE chunks, 0.1 s apart; notes when its client left.
    With ``break_after`` it dies after that many chunks (the process killed mid-answer)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> StreamingResponse:
        async def events():
            try:
                for i in range(200):
                    if i == break_after:
                        raise RuntimeError("upstream died mid-stream")
                    yield f'data: {{"n": {i}}}\n\n'.encode()
                    await asyncio.sleep(0.1)
            finally:
                seen["gone"] = time.monotonic()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_a_client_that_leaves_a_stream_through_the_gateway_stops_the_upstream_stream(tmp_path):
    settings = stack_settings(tmp_path, gateway={"retries": 0})
    seen: dict[str, float] = {}
    with ServerThread(streaming_upstream(seen), port=settings.port("inference-chat")), serve(settings, "gateway"):
        body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", settings.url("gateway") + "/v1/chat/completions", json=body,
                          headers=auth(settings, "guest"), timeout=10) as r:
            lines = r.iter_lines()
            assert next(lines) == 'data: {"n": 0}'
            assert next(lines) == "" and next(lines) == 'data: {"n": 1}'
        left = time.monotonic()  # the client closed its connection two chunks in
        deadline = left + 5
        while "gone" not in seen and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "gone" in seen, "the upstream kept streaming to a client that had left"
        assert seen["gone"] - left < 3.0


def test_an_upstream_that_dies_mid_stream_ends_the_clients_stream_with_an_error_event(tmp_path):
    """The first events are sent, so the stream cannot move to another replica; the client must not
    take the cut stream for a whole one, nor wait on a hung connection. Until issue 35 the gateway cut
    the client's connection (a RemoteProtocolError, no reason given); now the client gets the whole
    events that came, one ``data: {"error": ...}`` event saying why (what OpenAI's own streams send,
    which the SDKs raise), and a cleanly ended body — and never a ``[DONE]``."""
    settings = stack_settings(tmp_path, gateway={"retries": 0})
    seen: dict[str, float] = {}
    with ServerThread(streaming_upstream(seen, break_after=3), port=settings.port("inference-chat")), \
            serve(settings, "gateway"):
        body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", settings.url("gateway") + "/v1/chat/completions", json=body,
                          headers=auth(settings, "guest"), timeout=10) as r:
            got = [line for line in r.iter_lines() if line]
        assert got[:3] == [f'data: {{"n": {i}}}' for i in range(3)]
        assert len(got) == 4 and json.loads(got[3].removeprefix("data: "))["error"]["code"] == "upstream_broke_off"


@pytest.mark.integration
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

"""The gateway's way back after a restart, against upstreams we control: a failed upstream's cooldown
ends as soon as its /ready passes again, and a request whose fallback dies under it gets one more try
on an upstream that came back meanwhile (the fault drill met exactly this: chat killed, its requests
moved to code, code killed while serving them). The fallback is a real process killed with SIGKILL:
its connection breaks before the answer, so no engine is left running the request and replaying it
does not run it twice (a 5xx answer is not replayed: ``tests/test_gateway_upstreams.py``)."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
from fastapi import FastAPI

from suite.testing import ServerThread, auth, serve, stack_settings, start_app_process

HOLDING_UPSTREAM = """
import asyncio, os, pathlib
from fastapi import FastAPI
app = FastAPI()

@app.get("/health")
async def health():
    return {"status": "ok"}

@app.post("/v1/chat/completions")
async def chat():
    pathlib.Path(os.environ["ARRIVED"]).write_text("yes")
    await asyncio.sleep(60)  # killed before it answers
"""


def upstream(alias: str) -> FastAPI:
    """An inference stand-in: /ready passes, a completion answers 200."""
    app = FastAPI()

    @app.get("/ready")
    def ready():
        return {"status": "ready"}

    @app.post("/v1/chat/completions")
    def chat():
        return {"object": "chat.completion", "model": alias,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}

    return app


def test_a_request_whose_fallback_dies_is_served_by_the_upstream_that_came_back(tmp_path):
    arrived = tmp_path / "arrived"
    code, code_url = start_app_process(tmp_path, "holding", HOLDING_UPSTREAM, env={"ARRIVED": str(arrived)})
    try:
        settings = stack_settings(tmp_path, gateway={"retries": 0, "cooldown_s": 60.0, "recovery_probe_s": 0.2,
                                                     "pools": {"code": [code_url]}})
        outcome = {}
        with serve(settings, "gateway"):
            headers = auth(settings, "guest")

            def ask():
                outcome["r"] = httpx.post(settings.url("gateway") + "/v1/chat/completions", headers=headers,
                                          timeout=60, json={"model": "chat", "messages": [{"role": "user",
                                                                                           "content": "hi"}]})

            client = threading.Thread(target=ask)
            client.start()  # chat's port is closed: the request goes on to code, which holds it
            deadline = time.monotonic() + 30
            while not arrived.exists():
                assert time.monotonic() < deadline
                time.sleep(0.05)
            with ServerThread(upstream("chat"), port=settings.port("inference-chat")):  # chat is back
                deadline = time.monotonic() + 10
                while httpx.get(settings.url("gateway") + "/health").json()["upstreams"]["inference-chat"] != "ok":
                    assert time.monotonic() < deadline, "the cooldown did not end when chat was ready"
                    time.sleep(0.1)
                os.kill(code.pid, signal.SIGKILL)  # code dies under the request
                client.join(30)
                r = outcome["r"]
                assert r.status_code == 200, r.text
                assert r.headers["x-suite-upstream"] == "chat" and "x-suite-fallback-from" not in r.headers
                metrics = httpx.get(settings.url("gateway") + "/metrics").text
                assert 'gateway_replays_total{reason="died"} 1.0' in metrics
    finally:
        code.kill()
        code.wait(10)

"""The gateway's way back after a restart, against upstreams we control: a failed upstream's cooldown
ends as soon as its /ready passes again, and a request whose fallback fails too gets one more try on
an upstream that came back meanwhile (the fault drill met exactly this: chat killed, its requests
moved to code, code killed while serving them)."""

from __future__ import annotations

import threading
import time

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from suite.testing import ServerThread, auth, serve, stack_settings


def upstream(alias: str, release: threading.Event | None = None, arrived: threading.Event | None = None) -> FastAPI:
    """An inference stand-in: /ready passes; a completion answers 200, or with ``release`` waits for it
    and then fails with 500 (a fallback that dies under the request)."""
    app = FastAPI()

    @app.get("/ready")
    def ready():
        return {"status": "ready"}

    @app.post("/v1/chat/completions")
    def chat():
        if release is not None:
            arrived.set()
            release.wait(30)
            return JSONResponse({"error": {"message": "gone", "type": "server_error", "code": None}}, 500)
        return {"object": "chat.completion", "model": alias,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}

    return app


def test_a_request_whose_fallback_fails_is_served_by_the_upstream_that_came_back(tmp_path):
    settings = stack_settings(tmp_path, gateway={"retries": 0, "cooldown_s": 60.0, "recovery_probe_s": 0.2})
    release, arrived, outcome = threading.Event(), threading.Event(), {}
    with serve(settings, "gateway"), \
            ServerThread(upstream("code", release, arrived), port=settings.port("inference-code")):
        headers = auth(settings, "guest")

        def ask():
            outcome["r"] = httpx.post(settings.url("gateway") + "/v1/chat/completions", headers=headers, timeout=60,
                                      json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})

        client = threading.Thread(target=ask)
        client.start()  # chat's port is closed: the request goes on to code, which holds it
        assert arrived.wait(30)
        with ServerThread(upstream("chat"), port=settings.port("inference-chat")):  # chat is back
            deadline = time.monotonic() + 10
            while httpx.get(settings.url("gateway") + "/health").json()["upstreams"]["inference-chat"] != "ok":
                assert time.monotonic() < deadline, "the cooldown did not end when chat was ready"
                time.sleep(0.1)
            release.set()  # code fails under the request
            client.join(30)
            r = outcome["r"]
            assert r.status_code == 200, r.text
            assert r.headers["x-suite-upstream"] == "chat" and "x-suite-fallback-from" not in r.headers

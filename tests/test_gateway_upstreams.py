"""What counts as an upstream's failure at the gateway: the real gateway app over HTTP, in front of
two small upstream apps that answer what each test asks (400, 429, 500, 200) and count their calls.

Only connection errors, timeouts and 5xx are failures (the upstream leaves the rotation); a 4xx is the
client's and passes through untouched; a 429 passes through unless ``fallback_on_overload``. A 5xx
is the upstream's answer: an engine ran the request, so it is passed through rather than run again
elsewhere, unless ``gateway.retry_unsafe`` (``tests/test_gateway_pools.py`` has the pool's rules).
"""

from __future__ import annotations

import contextlib
from collections import Counter

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from suite.gateway.app import create_app
from suite.testing import ServerThread, stack_settings


def upstream(alias: str, calls: Counter) -> FastAPI:
    """An inference stand-in: answers with the status the request's ``answer`` field names."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        status = int(body.get("answer", {}).get(alias, 200))
        calls[alias] += 1
        if status == 200:
            return JSONResponse({"choices": [{"message": {"role": "assistant", "content": alias}}]})
        headers = {"Retry-After": "1"} if status == 429 else {}
        return JSONResponse({"error": {"message": f"{alias} says {status}", "type": "x", "code": f"c{status}"}},
                            status_code=status, headers=headers)

    return app


@contextlib.contextmanager
def gateway(tmp_path, **gw):
    settings = stack_settings(tmp_path, gateway={"retries": 1, "retry_backoff_s": 0.0, "cooldown_s": 60,
                                                 "fallback": {"chat": "code"}, "recovery_probe_s": 60, **gw},
                              auth={"enabled": False})  # the rules under test are the gateway's own
    calls: Counter = Counter()
    with ServerThread(upstream("chat", calls), port=settings.port("inference-chat")), \
            ServerThread(upstream("code", calls), port=settings.port("inference-code")), \
            ServerThread(create_app(settings), port=settings.port("gateway")) as gw_server:
        yield gw_server.url, calls


def ask(url: str, **answer) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", timeout=30,
                      json={"model": "chat", "messages": [{"role": "user", "content": "hi"}], "answer": answer})


def cooling(url: str) -> dict:
    return httpx.get(url + "/health").json()["upstreams"]


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_client_error_passes_through_untouched(tmp_path, status):
    with gateway(tmp_path) as (url, calls):
        r = ask(url, chat=status)
        assert r.status_code == status and r.json()["error"]["code"] == f"c{status}"
        assert r.headers["x-suite-upstream"] == "chat" and "x-suite-fallback-from" not in r.headers
        assert calls == {"chat": 1}  # no retry, no fallback
        assert cooling(url) == {"inference-chat": "ok", "inference-code": "ok"}  # no cooldown
        assert ask(url).status_code == 200 and ask(url).headers["x-suite-upstream"] == "chat"


def test_a_server_error_is_passed_through_not_run_again_and_cools_down(tmp_path):
    """Was: retried on chat, then served by code — three runs of one request on the engines."""
    with gateway(tmp_path) as (url, calls):
        r = ask(url, chat=500)
        assert r.status_code == 500 and r.json()["error"]["code"] == "c500"
        assert r.headers["x-suite-upstream"] == "chat" and calls == {"chat": 1}
        assert cooling(url)["inference-chat"] == "cooling"


def test_a_server_error_falls_back_when_replays_are_allowed(tmp_path):
    with gateway(tmp_path, retry_unsafe=True) as (url, calls):
        r = ask(url, chat=500)
        assert r.status_code == 200 and r.headers["x-suite-fallback-from"] == "chat"
        assert calls == {"chat": 1, "code": 1}  # the retries are for requests no engine had
        assert cooling(url)["inference-chat"] == "cooling"
        assert 'gateway_replays_total{reason="5xx"} 1.0' in httpx.get(url + "/metrics").text


def test_a_full_queue_passes_through_by_default(tmp_path):
    with gateway(tmp_path) as (url, calls):
        r = ask(url, chat=429)
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert calls == {"chat": 1} and cooling(url)["inference-chat"] == "ok"


def test_a_full_queue_may_fall_back_when_configured(tmp_path):
    with gateway(tmp_path, fallback_on_overload=True) as (url, calls):
        r = ask(url, chat=429)
        assert r.status_code == 200 and r.headers["x-suite-fallback-from"] == "chat"
        assert r.headers["x-suite-upstream"] == "code" and calls == {"chat": 1, "code": 1}
        assert cooling(url)["inference-chat"] == "ok"  # busy is not broken
        r = ask(url, chat=429, code=429)  # everyone busy: the client hears the last one's 429
        assert r.status_code == 429 and r.headers["x-suite-fallback-from"] == "chat"
        assert cooling(url) == {"inference-chat": "ok", "inference-code": "ok"}

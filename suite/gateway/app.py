"""Gateway service: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``, ``/v1/models``.

A request goes to the upstream of its model alias; connection errors, timeouts and 5xx answers are
retried, then the request falls back (chat -> code). A failed upstream is skipped for a cooldown.
Streams are passed through byte for byte; fallback is possible until the first byte is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Counter

from suite.auth.layer import forward_auth
from suite.gateway.routing import Router, Upstream
from suite.settings import Settings
from suite.web import ApiError, instrument

log = logging.getLogger(__name__)

RETRYABLE = (httpx.TransportError,)  # connect errors, read timeouts, protocol errors
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


class UpstreamFailed(Exception):
    def __init__(self, upstream: Upstream, reason: str) -> None:
        super().__init__(f"{upstream.service}: {reason}")
        self.upstream = upstream
        self.reason = reason


def create_app(settings: Settings) -> FastAPI:
    gw = settings.gateway
    router = Router.from_settings(settings)
    timeout = httpx.Timeout(gw.read_timeout_s, connect=gw.connect_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=200))
        yield
        await app.state.client.aclose()

    app = FastAPI(title="suite gateway", lifespan=lifespan)
    app.state.router = router

    async def ready() -> dict[str, Any]:
        client: httpx.AsyncClient = app.state.client
        results = await asyncio.gather(
            *(client.get(u.base_url + "/ready", timeout=settings.inference.ready_timeout_s + 5)
              for u in router.upstreams.values()),
            return_exceptions=True,
        )
        states, bad = {}, []
        for u, r in zip(router.upstreams.values(), results):
            ok = isinstance(r, httpx.Response) and r.status_code == 200
            states[u.service] = "ready" if ok else (f"HTTP {r.status_code}" if isinstance(r, httpx.Response)
                                                    else type(r).__name__)
            if not ok:
                bad.append(u.service)
        if bad:
            raise RuntimeError(f"upstreams not ready: {', '.join(bad)} ({states})")
        return {"upstreams": states}

    metrics = instrument(
        app, "gateway", ready=ready, ready_timeout_s=settings.inference.ready_timeout_s + 10, settings=settings,
        health_info=lambda: {"upstreams": {u.service: ("cooling" if router.cooling(u) else "ok")
                                           for u in router.upstreams.values()}},
    )
    upstream_calls = Counter("gateway_upstream_requests_total", "upstream attempts",
                             ["upstream", "outcome"], registry=metrics.registry)
    fallbacks = Counter("gateway_fallbacks_total", "requests served by a fallback upstream",
                        ["requested", "served_by"], registry=metrics.registry)

    async def read_json(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc.msg}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required: one of " + ", ".join(router.aliases()),
                           code="model_required")
        if model not in router.upstreams:
            raise ApiError(404, f"model '{model}' not found; available: {', '.join(router.aliases())}",
                           code="model_not_found")
        return body

    async def attempt(upstream: Upstream, path: str, body: dict, stream: bool) -> httpx.Response:
        """One upstream, with retries; returns an open response (streamed) with status < 500."""
        client: httpx.AsyncClient = app.state.client
        last = "no attempt"
        for i in range(gw.retries + 1):
            if i:
                await asyncio.sleep(gw.retry_backoff_s * (2 ** (i - 1)))
            try:
                req = client.build_request("POST", upstream.base_url + path, json=body,
                                           headers=forward_auth())  # the caller's key, checked again there
                resp = await client.send(req, stream=stream)
            except RETRYABLE as exc:
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                upstream_calls.labels(upstream.service, "error").inc()
                continue
            if resp.status_code >= 500:
                await resp.aread()
                await resp.aclose()
                last = f"HTTP {resp.status_code}"
                upstream_calls.labels(upstream.service, "5xx").inc()
                continue
            upstream_calls.labels(upstream.service, "ok").inc()
            return resp
        raise UpstreamFailed(upstream, last)

    async def forward(request: Request, path: str) -> Response:
        body = await read_json(request)
        alias = body["model"]
        stream = bool(body.get("stream"))
        failures: list[str] = []
        for upstream in router.chain(alias):
            try:
                resp = await attempt(upstream, path, body, stream)
            except UpstreamFailed as exc:
                router.mark_failed(upstream)
                failures.append(str(exc))
                log.warning("upstream failed, trying next: %s", exc)
                continue
            router.mark_ok(upstream)
            headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
            headers["x-suite-upstream"] = upstream.alias
            if upstream.alias != alias:
                headers["x-suite-fallback-from"] = alias
                fallbacks.labels(alias, upstream.alias).inc()
            if stream:
                return StreamingResponse(_relay(resp), status_code=resp.status_code, headers=headers,
                                         media_type=resp.headers.get("content-type"))
            return Response(resp.content, status_code=resp.status_code, headers=headers,
                            media_type=resp.headers.get("content-type"))
        raise ApiError(503, f"no upstream could serve model '{alias}': {'; '.join(failures)}",
                       code="upstreams_unavailable", headers={"Retry-After": str(int(gw.cooldown_s) or 1)})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await forward(request, "/v1/chat/completions")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await forward(request, "/v1/completions")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        client: httpx.AsyncClient = app.state.client
        try:
            resp = await client.post(settings.url("embedding") + "/v1/embeddings", content=await request.body(),
                                     headers={"content-type": "application/json", **forward_auth()})
        except httpx.TransportError as exc:
            raise ApiError(503, f"embedding service unavailable: {type(exc).__name__}",
                           headers={"Retry-After": "5"}) from None
        return Response(resp.content, status_code=resp.status_code,
                        media_type=resp.headers.get("content-type"))

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        created = int(time.time())
        return JSONResponse({"object": "list", "data": [
            {"id": alias, "object": "model", "created": created, "owned_by": "suite",
             "upstream": u.base_url} for alias, u in router.upstreams.items()]})

    return app


async def _relay(resp: httpx.Response):
    try:
        async for chunk in resp.aiter_raw():
            yield chunk
    finally:
        await resp.aclose()

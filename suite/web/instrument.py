"""Attach probes, metrics, request ids, the request guard and the error shape to any FastAPI app.

``instrument`` works on apps we build and on apps built by others (llama_cpp.server's), so every
service answers ``/health`` (liveness: the process answers, touches nothing), ``/ready``
(readiness: a real tiny operation under a deadline) and ``/metrics`` the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from suite.web.errors import install_error_handlers
from suite.web.guard import RequestGuard, RequestLimits
from suite.web.logs import request_id

log = logging.getLogger("suite.access")

ReadyCheck = Callable[[], Awaitable[dict[str, Any]]]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServiceMetrics:
    """Per-app registry (no module-level singletons): request counts and latency by route."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total", "HTTP requests", ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds", "HTTP request latency", ["service", "method", "route"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge("http_requests_in_flight", "requests being served", ["service"],
                               registry=self.registry)
        self.ready = Gauge("service_ready", "1 when the last readiness probe passed", ["service"],
                           registry=self.registry)
        self.service = service


class ObserveRequests:
    """Request id, access log and request metrics, as plain ASGI middleware.

    Not ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware pipes every chunk of a streamed
    response through an extra task and memory stream, which on a 2-core box steals CPU from the
    decode threads on every token. Here the request is timed to its last byte, streams included.
    """

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        service, metrics = self.metrics.service, self.metrics
        rid = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = rid or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        t0 = time.perf_counter()
        status = 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"x-request-id", rid.encode("latin-1"))]}
            await send(message)

        metrics.in_flight.labels(service).inc()
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            dt = time.perf_counter() - t0
            metrics.in_flight.labels(service).dec()
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            if route not in ("/metrics", "/health"):
                method, path = scope["method"], scope["path"]
                metrics.requests.labels(service, method, route, str(status)).inc()
                metrics.latency.labels(service, method, route).observe(dt)
                log.info("%s %s %s", method, path, status,
                         extra={"method": method, "path": path, "status": status,
                                "duration_ms": round(dt * 1000, 1)})
            request_id.reset(token)


def instrument(app: FastAPI, service: str, ready: ReadyCheck | None = None,
               ready_timeout_s: float = 30.0, health_info: Callable[[], dict] | None = None,
               limits: RequestLimits | None = None) -> ServiceMetrics:
    """Add /health, /ready, /metrics, a request-id + access-log middleware, the request guard
    (``suite.web.guard``, with ``limits`` or the defaults) and error handlers."""
    metrics = ServiceMetrics(service)
    app.state.metrics = metrics
    app.state.service_name = service
    install_error_handlers(app)
    started = time.time()

    app.add_middleware(RequestGuard, limits=limits)  # added first = inside ObserveRequests
    app.add_middleware(ObserveRequests, metrics=metrics)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        body = {"status": "ok", "service": service, "uptime_s": round(time.time() - started, 1)}
        if health_info is not None:
            body.update(health_info())
        return body

    @app.get("/ready", include_in_schema=False)
    async def ready_probe() -> Response:
        if ready is None:
            return JSONResponse({"status": "ready", "service": service})
        t0 = time.perf_counter()
        try:
            detail = await asyncio.wait_for(ready(), timeout=ready_timeout_s)
        except TimeoutError:
            metrics.ready.labels(service).set(0)
            return _not_ready(service, f"readiness check exceeded {ready_timeout_s:.0f}s", t0)
        except Exception as exc:  # a failed probe is an answer, not a crash
            metrics.ready.labels(service).set(0)
            return _not_ready(service, f"{type(exc).__name__}: {exc}", t0)
        metrics.ready.labels(service).set(1)
        body = {"status": "ready", "service": service, "check_ms": round((time.perf_counter() - t0) * 1000, 1)}
        body.update(detail or {})
        return JSONResponse(body)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def _not_ready(service: str, reason: str, t0: float) -> JSONResponse:
    return JSONResponse(
        {"status": "not_ready", "service": service, "reason": reason,
         "check_ms": round((time.perf_counter() - t0) * 1000, 1)},
        status_code=503, headers={"Retry-After": "5"},
    )

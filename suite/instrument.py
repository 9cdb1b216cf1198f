"""Assemble a service: attach probes, metrics, request ids, the request guard, the error shape and the
auth layer to any FastAPI app. It sits above ``suite.web`` (the HTTP pieces) and ``suite.auth`` (keys
and policy), which both stay below it: neither imports this module.

``instrument`` works on apps we build and on apps built by others (llama_cpp.server's), so every
service answers ``/health`` (liveness: the process answers and, when the service names one, its
worker is alive; touches nothing else), ``/ready`` (readiness: a real tiny operation under a
deadline) and ``/metrics`` the same way.

``/ready`` runs one check at a time and reuses a passing answer for ``ready_every_s``: a flood of
probes costs at most one real check per interval (the inference service's check takes a slot in
its queue like any request), never one per call.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from suite.auth.layer import AuthLayer, Refusal
from suite.settings import Settings
from suite.storage import SpaceGuard
from suite.web.errors import install_error_handlers
from suite.web.guard import RequestGuard, RequestLimits
from suite.web.logs import request_id
from suite.web.transport import TransportGuard

log = logging.getLogger("suite.access")

ReadyCheck = Callable[[], Awaitable[dict[str, Any]]]
LiveCheck = Callable[[], str | None]  # why the service's worker is not alive, or None

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class ServiceMetrics:
    """Per-app registry (no module-level singletons): request counts and latency by route, readiness,
    and the process's own CPU time and memory."""

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
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds, start time (a change of
        # start time tells a scraper the counters began again)
        ProcessCollector(registry=self.registry)
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


class ReadyGate:
    """Readiness checks one at a time: concurrent callers share the check in flight, and a passing
    answer is reused for ``every_s`` (a failing one is not, so a service going down shows at once)."""

    def __init__(self, check: ReadyCheck, timeout_s: float, every_s: float) -> None:
        self.check, self.timeout_s, self.every_s = check, timeout_s, every_s
        self._task: asyncio.Task | None = None
        self._passed: tuple[float, dict[str, Any]] | None = None

    async def __call__(self) -> tuple[dict[str, Any] | None, str, float]:
        """(detail when ready, reason when not, seconds the check took)."""
        if self._passed and time.monotonic() - self._passed[0] < self.every_s:
            return self._passed[1], "", 0.0
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._task)  # a caller that goes away does not cancel the others'

    async def _run(self) -> tuple[dict[str, Any] | None, str, float]:
        t0 = time.perf_counter()
        try:
            detail = await asyncio.wait_for(self.check(), timeout=self.timeout_s)
        except TimeoutError:
            return None, f"readiness check exceeded {self.timeout_s:.0f}s", time.perf_counter() - t0
        except Exception as exc:  # a failed probe is an answer, not a crash
            return None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0
        finally:
            self._task = None
        self._passed = (time.monotonic(), detail or {})
        return self._passed[1], "", time.perf_counter() - t0


def instrument(app: FastAPI, service: str, ready: ReadyCheck | None = None,
               ready_timeout_s: float = 30.0, health_info: Callable[[], dict] | None = None, *,
               settings: Settings, on_refusal: Refusal | None = None, live: LiveCheck | None = None,
               ready_every_s: float = 1.0, storage: Callable[[], SpaceGuard | None] | None = None) -> ServiceMetrics:
    """Add /health, /ready, /metrics, a request-id + access-log middleware, error handlers, and the
    trust boundary: transport checks (``suite.web.transport``), the request guard (``suite.web.guard``:
    body size, JSON shape, text encoding, with the service's ``guard.*`` limits) and the key + policy
    check (``suite.auth.layer``) in front of every route but the probes. ``settings`` is required: no
    service is built without its boundary.

    ``live`` names what is wrong with the service's worker (an engine thread dead or stuck); while
    it does, ``/health`` answers 503 so the supervisor restarts the process.

    ``storage`` gives the service's ``SpaceGuard`` (stateful services): ``/health`` then says whether
    writes are accepted and, when the disk is full, why — still 200 (a full disk is no reason to
    restart a process whose reads work).
    """
    metrics = ServiceMetrics(service)
    app.state.metrics = metrics
    app.state.service_name = service
    install_error_handlers(app)
    started = time.time()
    gate = ReadyGate(ready, ready_timeout_s, ready_every_s) if ready is not None else None

    # added innermost first: requests meet ObserveRequests, TransportGuard (headers only), AuthLayer
    # (headers only: key + policy), then the RequestGuard (the body): nothing is read from a request a
    # browser page or a rebinding sent, nor from one without a valid key for its route
    app.add_middleware(RequestGuard, limits=RequestLimits.for_service(settings, service))
    app.add_middleware(AuthLayer, service=service, settings=settings, on_refusal=on_refusal)
    app.add_middleware(TransportGuard, settings=settings)
    app.add_middleware(ObserveRequests, metrics=metrics)

    @app.get("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        body = {"status": "ok", "service": service, "uptime_s": round(time.time() - started, 1)}
        if health_info is not None:
            body.update(health_info())
        guard = storage() if storage is not None else None
        if guard is not None:
            body["storage"] = guard.state()
            if body["storage"]["writes"] == "refused":
                body["status"] = "degraded"
        problem = live() if live is not None else None
        if problem:
            body.update(status="failing", reason=problem)
            return JSONResponse(body, status_code=503)
        return JSONResponse(body)

    @app.get("/ready", include_in_schema=False)
    async def ready_probe() -> Response:
        if gate is None:
            return JSONResponse({"status": "ready", "service": service})
        detail, reason, took = await gate()
        metrics.ready.labels(service).set(0 if detail is None else 1)
        if detail is None:
            return _not_ready(service, reason, took)
        return JSONResponse({"status": "ready", "service": service, "check_ms": round(took * 1000, 1), **detail})

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


def _not_ready(service: str, reason: str, took: float) -> JSONResponse:
    return JSONResponse(
        {"status": "not_ready", "service": service, "reason": reason, "check_ms": round(took * 1000, 1)},
        status_code=503, headers={"Retry-After": "5"},
    )


Opener = Callable[[FastAPI], Any]  # the service object, or an awaitable of it


def service_app(name: str, settings: Settings, open_service: Opener, *, router: APIRouter,
                ready_timeout_s: float, storage: Callable[[Any], SpaceGuard | None] | None = None,
                on_refusal: Refusal | None = None,
                running: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None) -> FastAPI:
    """The one shape of a service app (llama-cpp-python's ``create_app(settings)`` + routers).

    The lifespan opens the service object (``open_service(app)``, sync or async) and keeps it as
    ``app.state.<name>``, where the routes' ``from_state`` finds it; runs ``running(app)`` around the
    app's life when given (the tool server's MCP session manager); and closes the service at the end
    (its ``aclose()`` or ``close()``, awaited when async), whatever happened. ``instrument`` adds the
    probes — ``/ready`` runs the service's ``ready()`` (in a worker thread when it is a plain function),
    ``/health`` adds its ``health_info()`` when it has one and, with ``storage``, its ``SpaceGuard``, and
    answers 503 while its ``liveness()`` (when it has one) names a dead or stuck worker — the metrics and
    the trust boundary; then the routes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = open_service(app)
        if inspect.isawaitable(service):
            service = await service
        setattr(app.state, name, service)
        try:
            if running is None:
                yield
            else:
                async with running(app):
                    yield
        finally:
            closing = getattr(service, "aclose", None) or service.close
            done = closing()
            if inspect.isawaitable(done):
                await done

    app = FastAPI(title=f"suite {name}", lifespan=lifespan)

    def current() -> Any:
        return getattr(app.state, name, None)

    async def ready() -> dict[str, Any]:
        check = current().ready
        return await check() if inspect.iscoroutinefunction(check) else await asyncio.to_thread(check)

    def health_info() -> dict:
        info = getattr(current(), "health_info", None)
        return info() if info is not None else {}

    def space() -> SpaceGuard | None:
        service = current()
        return storage(service) if storage is not None and service is not None else None

    def live() -> str | None:
        check = getattr(current(), "liveness", None)
        return check() if check is not None else None

    instrument(app, name, ready=ready, ready_timeout_s=ready_timeout_s, health_info=health_info,
               settings=settings, on_refusal=on_refusal, storage=space if storage is not None else None, live=live)
    app.include_router(router)
    return app

"""The gateway's logic: pick the upstream of a model alias, retry, fall back, cool down, relay.

A request goes to the upstream of its model alias; connection errors, timeouts and 5xx answers are
retried, then the request falls back (chat -> code, code -> chat). A failed upstream is skipped for a
cooldown, which ends early once its readiness probe passes again (a restarted upstream is back as
soon as it is ready). Streams are passed through byte for byte; fallback is possible until the first
byte is sent.

Only connection errors, timeouts and 5xx are an upstream's failure. A 4xx is the client's mistake
(a grammar that does not parse, a prompt longer than the context): it is passed through untouched —
no retry, no fallback, no cooldown, so one client's bad requests never turn other clients away. A
429 (the upstream's queue is full) is passed through too, unless ``gateway.fallback_on_overload``
lets the request try the next upstream of its chain (answered with ``x-suite-fallback-from``);
the busy upstream is not cooled down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter

from suite.auth.layer import forward_auth
from suite.gateway.routing import Router, Upstream
from suite.settings import Settings
from suite.web import ApiError

log = logging.getLogger(__name__)

# connect errors, read timeouts, disconnects, malformed answers (aiohttp's timeouts are asyncio's)
RETRYABLE = (aiohttp.ClientError, asyncio.TimeoutError)
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


class UpstreamFailed(Exception):
    def __init__(self, upstream: Upstream, reason: str) -> None:
        super().__init__(f"{upstream.service}: {reason}")
        self.upstream = upstream
        self.reason = reason


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.upstream_calls = Counter("gateway_upstream_requests_total", "upstream attempts",
                                      ["upstream", "outcome"], registry=registry)
        self.fallbacks = Counter("gateway_fallbacks_total", "requests served by a fallback upstream",
                                 ["requested", "served_by"], registry=registry)


class Gateway:
    """Holds the upstream table and one HTTP client session; built in the app's lifespan
    (``app.state.gateway``).

    The upstream client is aiohttp's: relaying a streamed token costs its C parser about a quarter of
    the CPU httpx's pure-Python stack takes (``benchmarks/gateway_relay.py``), and on a box whose cores
    decode tokens that CPU is taken from the model.
    """

    def __init__(self, settings: Settings, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.cfg = settings.gateway
        self.router = Router.from_settings(settings)
        self.metrics = metrics
        # sock_read bounds each wait for upstream bytes (a stalled stream), not the whole answer; the
        # upstreams are asked for identity encoding, so bytes relayed are the bytes received
        self.client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=self.cfg.connect_timeout_s,
                                          sock_read=self.cfg.read_timeout_s),
            connector=aiohttp.TCPConnector(limit=200), skip_auto_headers=("Accept-Encoding",))
        self._recovering: dict[str, asyncio.Task] = {}

    async def aclose(self) -> None:
        for task in self._recovering.values():
            task.cancel()
        await self.client.close()

    async def _status(self, url: str, timeout_s: float) -> int:
        """The HTTP status of GET ``url`` (a probe); raises ``RETRYABLE`` when there is none."""
        async with self.client.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            return r.status

    # -- probes ---------------------------------------------------------------------------------
    async def ready(self) -> dict[str, Any]:
        """Every upstream's own /ready answers 200."""
        ups = list(self.router.upstreams.values())
        results = await asyncio.gather(
            *(self._status(u.base_url + "/ready", self.settings.inference.ready_timeout_s + 5) for u in ups),
            return_exceptions=True,
        )
        states, bad = {}, []
        for u, r in zip(ups, results):
            ok = r == 200
            states[u.service] = "ready" if ok else (f"HTTP {r}" if isinstance(r, int) else type(r).__name__)
            if not ok:
                bad.append(u.service)
        if bad:
            raise RuntimeError(f"upstreams not ready: {', '.join(bad)} ({states})")
        return {"upstreams": states}

    def health_info(self) -> dict[str, Any]:
        return {"upstreams": {u.service: ("cooling" if self.router.cooling(u) else "ok")
                              for u in self.router.upstreams.values()}}

    # -- requests -------------------------------------------------------------------------------
    def parse(self, raw: bytes) -> dict[str, Any]:
        """The JSON object of a completion request, with a model this gateway serves."""
        try:
            body = json.loads(raw or b"null")
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc.msg}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        model = body.get("model")
        aliases = ", ".join(self.router.aliases())
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' is required: one of " + aliases, code="model_required")
        if model not in self.router.upstreams:
            raise ApiError(404, f"model '{model[:100]}' not found; available: {aliases}", code="model_not_found")
        return body

    async def forward(self, path: str, body: dict[str, Any]) -> Response:
        """Serve ``body`` from its model's upstream chain; 503 when none could."""
        alias = body["model"]
        stream = bool(body.get("stream"))
        failures: list[str] = []
        busy: Response | None = None  # an upstream's 429, kept while a fallback is tried
        chain = self.router.chain(alias)
        tries, second = list(chain), False
        while tries:
            upstream = tries.pop(0)
            try:
                resp = await self._attempt(upstream, path, body, stream)
            except UpstreamFailed as exc:
                self._mark_failed(upstream)
                failures.append(str(exc))
                log.warning("upstream failed, trying next: %s", exc)
                if not tries and not second:  # all failed: one ready again meanwhile (a restart that
                    second = True             # finished while the fallback served) gets one more try
                    tries = [u for u in chain if u is not upstream and not self.router.cooling(u)]
                continue
            self.router.mark_ok(upstream)
            if resp.status == 429 and self.cfg.fallback_on_overload and tries:
                busy = busy or await self._relayed(resp, upstream, alias, stream=False)
                continue
            return await self._relayed(resp, upstream, alias, stream)
        if busy is not None:
            return busy
        raise ApiError(503, f"no upstream could serve model '{alias}': {'; '.join(failures)}",
                       code="upstreams_unavailable", headers={"Retry-After": str(int(self.cfg.cooldown_s) or 1)})

    async def _relayed(self, resp: aiohttp.ClientResponse, upstream: Upstream, alias: str, stream: bool) -> Response:
        """The upstream's answer as ours: status, body and headers unchanged (hop headers aside).
        A streamed one is relayed as its bytes arrive; any other (an error too) was read whole by
        ``_attempt``."""
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
        headers["x-suite-upstream"] = upstream.alias
        if upstream.alias != alias:
            headers["x-suite-fallback-from"] = alias
            self.metrics.fallbacks.labels(alias, upstream.alias).inc()
        media_type = resp.headers.get("content-type")
        if stream and resp.status < 400:
            return StreamingResponse(_relay(resp), status_code=resp.status, headers=headers, media_type=media_type)
        return Response(await resp.read(), status_code=resp.status, headers=headers, media_type=media_type)

    def _mark_failed(self, upstream: Upstream) -> None:
        self.router.mark_failed(upstream)
        task = self._recovering.get(upstream.service)
        if task is None or task.done():
            self._recovering[upstream.service] = asyncio.create_task(self._recover(upstream))

    async def _recover(self, upstream: Upstream) -> None:
        """While ``upstream`` cools down, probe its readiness; end the cooldown once it passes."""
        while self.router.cooling(upstream):
            await asyncio.sleep(self.cfg.recovery_probe_s)
            try:
                status = await self._status(upstream.base_url + "/ready", self.settings.inference.ready_timeout_s)
            except RETRYABLE:
                continue
            if status == 200:
                self.router.mark_ok(upstream)
                log.info("upstream %s is ready again; cooldown ended", upstream.service)

    async def _attempt(self, upstream: Upstream, path: str, body: dict, stream: bool) -> aiohttp.ClientResponse:
        """One upstream, with retries; returns its answer with status < 500: a streamed success open
        (headers read, the body to relay), any other read whole."""
        last = "no attempt"
        calls = self.metrics.upstream_calls
        for i in range(self.cfg.retries + 1):
            if i:
                await asyncio.sleep(self.cfg.retry_backoff_s * (2 ** (i - 1)))
            resp = None
            try:
                resp = await self.client.post(upstream.base_url + path, json=body,
                                              headers=forward_auth())  # the caller's key, checked there too
                if not stream or resp.status >= 400:
                    await resp.read()  # an answer not streamed (errors never are) is read whole here:
                    #                    a body broken off is this upstream's failure too
            except RETRYABLE as exc:
                if resp is not None:
                    resp.close()
                last = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                calls.labels(upstream.service, "error").inc()
                continue
            if resp.status >= 500:
                last = f"HTTP {resp.status}"
                calls.labels(upstream.service, "5xx").inc()
                continue
            calls.labels(upstream.service, "ok" if resp.status < 400 else str(resp.status)).inc()
            return resp
        raise UpstreamFailed(upstream, last)

    async def embeddings(self, raw: bytes) -> Response:
        """``/v1/embeddings`` relayed to the embedding service as it is."""
        try:
            async with self.client.post(self.settings.url("embedding") + "/v1/embeddings", data=raw,
                                        headers={"content-type": "application/json", **forward_auth()}) as resp:
                return Response(await resp.read(), status_code=resp.status,
                                media_type=resp.headers.get("content-type"))
        except RETRYABLE as exc:
            raise ApiError(503, f"embedding service unavailable: {type(exc).__name__}",
                           headers={"Retry-After": "5"}) from None

    def models(self) -> dict[str, Any]:
        """The aliases clients send; where they are served (internal URLs) is not the client's business."""
        created = int(time.time())
        return {"object": "list", "data": [{"id": alias, "object": "model", "created": created, "owned_by": "suite"}
                                           for alias in self.router.upstreams]}


async def _relay(resp: aiohttp.ClientResponse):
    """The upstream's bytes as they arrive. A relay cut short (our client went away, the upstream broke
    off) closes the upstream connection, which the inference service sees and frees the slot."""
    try:
        async for chunk in resp.content.iter_any():
            yield chunk
        resp.release()  # read to the end: the connection goes back to the pool
    finally:
        resp.close()  # an error here propagates: the client's connection is cut, not ended as if whole

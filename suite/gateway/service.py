"""The gateway's logic: pick a replica of the model alias's pool, retry what is safe, fall back, relay.

A request goes to the least busy replica of its alias's pool (``routing.Router.plan``). What happens
when a replica does not answer depends on whether the request reached its engine:

- **did not reach it** — a connect error (refused, unreachable, TLS refused), or a 429 or 503 with
  ``Retry-After`` (queue full, model not loaded): the request moves to the next replica at once. A
  replica that is the last of its pool left to try gets ``gateway.retries`` more tries after
  ``retry_backoff_s``;
- **the replica died under it** — the connection broke before the answer (a non-streamed answer not
  whole, a stream before its first event): the work there is gone with the process, so the request
  is replayed on the next replica (counted in ``gateway_replays_total{reason="died"}``);
- **it may still be running it** — a read timeout — or **it answered with an error** — a 5xx: the
  client gets a 504 or that 5xx; a replay could run the request twice. ``gateway.retry_unsafe``
  replays these too, counted by reason.

Transport errors and 5xx take the replica out of rotation until its ready path passes (probed every
``recovery_probe_s``); a 429 makes it the last choice for its ``Retry-After``. Only when every
replica of the pool failed does the request go to the fallback alias's pool (``x-suite-fallback-from``);
when they were only busy, the client gets the 429 unless ``fallback_on_overload``.

A 4xx other than 429 is the client's mistake (a grammar that does not parse, a prompt longer than the
context): passed through untouched — no retry, no fallback, no ejection, so one client's bad requests
never turn others away. Streams are relayed as whole SSE events (``relay``); one whose upstream breaks
off after its first event ends with an error event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge

from suite import tls
from suite.auth.layer import forward_auth
from suite.gateway import probes, relay
from suite.gateway.routing import Capacity, Replica, Router
from suite.settings import Settings
from suite.web import ApiError

log = logging.getLogger(__name__)

# any failure to get an answer: connect errors, read timeouts, disconnects, malformed answers
RETRYABLE = (aiohttp.ClientError, asyncio.TimeoutError)
# the request never left this gateway (aiohttp's ConnectionTimeoutError: no connection within connect_timeout_s)
NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}
# below uvicorn's keep-alive (5 s): a pooled connection the upstream already closed would look like a
# replica that died under the request
KEEPALIVE_S = 3.0


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.upstream_calls = Counter("gateway_upstream_requests_total", "upstream attempts by replica and outcome",
                                      ["upstream", "outcome"], registry=registry)
        self.fallbacks = Counter("gateway_fallbacks_total", "requests served by a fallback alias's pool",
                                 ["requested", "served_by"], registry=registry)
        self.in_flight = Gauge("gateway_upstream_in_flight", "requests this gateway has in flight at a replica",
                               ["upstream"], registry=registry)
        self.up = Gauge("gateway_upstream_in_rotation", "1 while a replica is in rotation, 0 while ejected",
                        ["upstream", "alias"], registry=registry)
        self.ejections = Counter("gateway_upstream_ejections_total", "replicas taken out of rotation",
                                 ["upstream"], registry=registry)
        self.readmissions = Counter("gateway_upstream_readmissions_total", "replicas back in rotation",
                                    ["upstream"], registry=registry)
        self.replays = Counter("gateway_replays_total", "requests sent again after an engine had them",
                               ["reason"], registry=registry)
        self.stream_breaks = Counter("gateway_stream_breaks_total", "streams whose replica broke off after "
                                     "the first event (ended with an error event)", ["upstream"], registry=registry)
        self.reported_busy = Gauge("gateway_upstream_reported_busy", "busy slots plus waiting requests a "
                                   "replica last reported", ["upstream"], registry=registry)
        self.reported_slots = Gauge("gateway_upstream_reported_slots", "slots a replica last reported",
                                    ["upstream"], registry=registry)


@dataclass
class Attempt:
    """One try at one replica. ``kind``: answer | busy | unreached | died | timeout | error."""

    kind: str
    replica: Replica
    reason: str = ""
    resp: aiohttp.ClientResponse | None = None
    first: bytes = b""  # a streamed answer's first event, read before the client sees anything

    @property
    def reached_engine(self) -> bool:
        return self.kind in ("died", "timeout", "error")


class Gateway:
    """Holds the replica table and one HTTP client session; built in the app's lifespan
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
            connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=KEEPALIVE_S, ssl=tls.client_context(settings)),
            skip_auto_headers=("Accept-Encoding",))
        self._recovering: dict[str, asyncio.Task] = {}
        self._load_kind: dict[str, str] = {}
        for r in self.router.replicas():
            metrics.up.labels(r.name, r.alias).set(1)
        balanced = [r for pool in self.router.pools.values() if len(pool) > 1 for r in pool
                    if r.load_probe != "none"]
        self._probing = asyncio.create_task(self._probe_loads(balanced)) \
            if balanced and self.cfg.load_probe_s > 0 else None

    async def aclose(self) -> None:
        for task in [*self._recovering.values(), *([self._probing] if self._probing else [])]:
            task.cancel()
        await self.client.close()

    async def _get(self, url: str, timeout_s: float) -> tuple[int, bytes]:
        """GET ``url`` (a probe): status and body; raises ``RETRYABLE`` when there is none."""
        async with self.client.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
            return r.status, await r.read()

    # -- probes ---------------------------------------------------------------------------------
    async def ready(self) -> dict[str, Any]:
        """Every alias has a replica whose own ready path answers 200."""
        reps = self.router.replicas()
        results = await asyncio.gather(
            *(self._get(r.base_url + r.ready_path, self.settings.inference.ready_timeout_s + 5) for r in reps),
            return_exceptions=True,
        )
        states: dict[str, str] = {}
        ready_aliases = set()
        for r, res in zip(reps, results):
            ok = isinstance(res, tuple) and res[0] == 200
            states[r.name] = "ready" if ok else (f"HTTP {res[0]}" if isinstance(res, tuple) else type(res).__name__)
            if ok:
                ready_aliases.add(r.alias)
        missing = [a for a in self.router.aliases() if a not in ready_aliases]
        if missing:
            bad = [r.name for r in reps if states[r.name] != "ready"]
            raise RuntimeError(f"upstreams not ready: {', '.join(bad)} ({states}); no ready replica "
                               f"for {', '.join(missing)}")
        return {"upstreams": states}

    def health_info(self) -> dict[str, Any]:
        return {
            "upstreams": {r.name: ("cooling" if self.router.cooling(r) else "ok") for r in self.router.replicas()},
            "pools": {alias: [{"name": r.name, "url": r.base_url, "ready_path": r.ready_path,
                               "state": self.router.state(r),
                               "in_flight": r.in_flight,
                               "reported": None if r.capacity is None else
                               {"slots": r.capacity.slots, "busy": r.capacity.busy}} for r in pool]
                      for alias, pool in self.router.pools.items()},
        }

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
        """Serve ``body`` from its alias's pool, then the fallback's; 503 when no replica could."""
        alias = body["model"]
        stream = bool(body.get("stream"))
        plan = self.router.plan(alias)
        queue, failures = list(plan), []
        busy: Attempt | None = None  # a replica's 429, kept while the others are tried
        tries: dict[str, int] = {}
        replay_of: str | None = None  # why the last attempt, which reached an engine, is being replayed
        second = False
        while queue:
            replica = queue.pop(0)
            if replica.alias != alias and busy is not None and not self.cfg.fallback_on_overload:
                continue  # the pool is busy, not down: its 429 is the answer
            if replay_of:
                self.metrics.replays.labels(replay_of).inc()
                replay_of = None
            att = await self._attempt(replica, path, body, stream)
            if att.kind == "answer":
                if self.router.mark_ok(replica):
                    self._readmitted(replica)
                return await self._relayed(att, replica, alias, stream)
            if att.kind == "busy":
                if busy is not None and busy.resp is not None:
                    busy.resp.close()
                busy = att
                self.router.mark_busy(replica, _retry_after(att.resp))
                continue
            self._mark_failed(replica)
            failures.append(f"{replica.name}: {att.reason}")
            log.warning("replica %s failed (%s): %s", replica.name, att.kind, att.reason)
            if att.kind in ("timeout", "error") and not self.cfg.retry_unsafe:
                return await self._unreplayed(att, replica, alias)
            if att.reached_engine:
                replay_of = "5xx" if att.kind == "error" else att.kind
            elif att.resp is not None:
                att.resp.close()
            if tries.get(replica.name, 0) < self.cfg.retries and att.kind in ("unreached", "died") \
                    and not any(r.alias == replica.alias and not self.router.cooling(r) for r in queue):
                tries[replica.name] = tries.get(replica.name, 0) + 1
                await asyncio.sleep(self.cfg.retry_backoff_s * (2 ** (tries[replica.name] - 1)))
                queue.insert(0, replica)
                continue
            if not queue and not second:  # all failed: one ready again meanwhile (a restart that finished
                second = True  # while the others served) gets one more try
                queue = [r for r in plan if r is not replica and not self.router.cooling(r)]
        if busy is not None:
            return await self._relayed(busy, busy.replica, alias, stream=False)
        raise ApiError(503, f"no upstream could serve model '{alias}': {'; '.join(failures)}",
                       code="upstreams_unavailable", headers={"Retry-After": str(int(self.cfg.cooldown_s) or 1)})

    async def _attempt(self, replica: Replica, path: str, body: dict, stream: bool) -> Attempt:
        """One try at one replica. A streamed answer comes back open with its first event read; any
        other answer (an error too) read whole."""
        calls = self.metrics.upstream_calls.labels
        replica.in_flight += 1
        self.metrics.in_flight.labels(replica.name).inc()
        resp = None
        keep = False
        try:
            try:
                resp = await self.client.post(replica.base_url + path, json=body,
                                              headers=forward_auth())  # the caller's key, checked there too
            except NOT_SENT as exc:
                calls(replica.name, "connect_error").inc()
                return Attempt("unreached", replica, _why(exc))
            except aiohttp.SocketTimeoutError:
                calls(replica.name, "timeout").inc()
                return Attempt("timeout", replica, f"no answer within {self.cfg.read_timeout_s:g} s")
            except RETRYABLE as exc:
                calls(replica.name, "died").inc()
                return Attempt("died", replica, _why(exc))
            try:
                if stream and resp.status < 400:
                    first = await relay.first_event(resp, relay.is_sse(resp.headers.get("content-type")))
                    calls(replica.name, "ok").inc()
                    keep = True
                    return Attempt("answer", replica, resp=resp, first=first)
                await resp.read()  # an answer not streamed (errors never are) is read whole here
            except aiohttp.SocketTimeoutError:
                calls(replica.name, "timeout").inc()
                return Attempt("timeout", replica, f"answer stalled for {self.cfg.read_timeout_s:g} s", resp)
            except RETRYABLE as exc:
                calls(replica.name, "died").inc()
                return Attempt("died", replica, f"broke off before the answer: {_why(exc)}", resp)
            status = resp.status
            if status == 429 or (status == 503 and "retry-after" in resp.headers):
                calls(replica.name, str(status)).inc()
                return Attempt("busy" if status == 429 else "unreached", replica, f"HTTP {status}", resp)
            if status >= 500:
                calls(replica.name, "5xx").inc()
                return Attempt("error", replica, f"HTTP {status}", resp)
            calls(replica.name, "ok" if status < 400 else str(status)).inc()
            return Attempt("answer", replica, resp=resp)
        finally:
            if not keep:  # a stream's relay counts it out when it ends
                self._done(replica)

    def _done(self, replica: Replica) -> None:
        replica.in_flight -= 1
        self.metrics.in_flight.labels(replica.name).dec()

    async def _relayed(self, att: Attempt, replica: Replica, alias: str, stream: bool) -> Response:
        """The replica's answer as ours: status, body and headers unchanged (hop headers aside), plus
        which alias and replica served it. A streamed one is relayed as its events arrive."""
        resp = att.resp
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in HOP_HEADERS}
        headers["x-suite-upstream"] = replica.alias
        headers["x-suite-replica"] = replica.name
        if replica.alias != alias:
            headers["x-suite-fallback-from"] = alias
            self.metrics.fallbacks.labels(alias, replica.alias).inc()
        media_type = resp.headers.get("content-type")
        if stream and resp.status < 400:
            body = relay.relay(resp, att.first, name=replica.name,
                               on_break=lambda exc: self._broke(replica, exc), on_end=lambda: self._done(replica))
            return StreamingResponse(body, status_code=resp.status, headers=headers, media_type=media_type)
        return Response(await resp.read(), status_code=resp.status, headers=headers, media_type=media_type)

    async def _unreplayed(self, att: Attempt, replica: Replica, alias: str) -> Response:
        """A read timeout or a 5xx, not replayed (``gateway.retry_unsafe`` is off): the 5xx as the
        replica sent it, or our 504."""
        if att.kind == "error" and att.resp is not None:
            return await self._relayed(att, replica, alias, stream=False)
        if att.resp is not None:
            att.resp.close()
        raise ApiError(504, f"upstream {replica.name} did not answer: {att.reason}; not retried, as it may "
                       "still be running the request (gateway.retry_unsafe)", code="upstream_timeout",
                       type="upstream_error")

    def _broke(self, replica: Replica, exc: BaseException) -> None:
        log.warning("replica %s broke off mid-stream: %s", replica.name, _why(exc))
        self.metrics.stream_breaks.labels(replica.name).inc()
        self._mark_failed(replica)

    # -- rotation -------------------------------------------------------------------------------
    def _mark_failed(self, replica: Replica) -> None:
        if self.router.mark_failed(replica):
            self.metrics.ejections.labels(replica.name).inc()
            self.metrics.up.labels(replica.name, replica.alias).set(0)
            log.warning("replica %s out of rotation until %s passes", replica.name, replica.ready_path)
        task = self._recovering.get(replica.name)
        if task is None or task.done():
            self._recovering[replica.name] = asyncio.create_task(self._recover(replica))

    def _readmitted(self, replica: Replica) -> None:
        self.metrics.readmissions.labels(replica.name).inc()
        self.metrics.up.labels(replica.name, replica.alias).set(1)
        log.info("replica %s back in rotation", replica.name)

    async def _recover(self, replica: Replica) -> None:
        """While ``replica`` is out of rotation, probe its ready path; readmit it once that passes (or,
        when the path cannot be probed — a 4xx —, once ``cooldown_s`` has passed since it failed)."""
        while self.router.cooling(replica):
            await asyncio.sleep(self.cfg.recovery_probe_s)
            try:
                status, _ = await self._get(replica.base_url + replica.ready_path,
                                            self.settings.inference.ready_timeout_s)
            except RETRYABLE:
                continue
            unprobeable = 400 <= status < 500 and status != 429
            if (status == 200 or (unprobeable and self.router.cooled_down(replica))) and self.router.mark_ok(replica):
                if unprobeable:
                    log.warning("replica %s: %s answers HTTP %d; readmitted after cooldown_s", replica.name,
                                replica.ready_path, status)
                self._readmitted(replica)

    async def _probe_loads(self, replicas: list[Replica]) -> None:
        """Every ``load_probe_s``: what each replica in rotation reports about its own load."""
        while True:
            await asyncio.gather(*(self._probe_load(r) for r in replicas if not self.router.cooling(r)))
            await asyncio.sleep(self.cfg.load_probe_s)

    async def _probe_load(self, replica: Replica) -> None:
        kind = self._load_kind.get(replica.name, replica.load_probe)
        if kind == "none":
            return
        timeout = min(2.0, max(0.2, self.cfg.load_probe_s))
        load = None
        try:
            if kind in ("auto", "metrics", "ours", "llamacpp"):
                status, text = await self._get(replica.base_url + "/metrics", timeout)
                found, load, busy = probes.from_metrics(text.decode("utf-8", "replace")) if status == 200 \
                    else ("", None, 0)
                if found == "llamacpp":
                    status, props = await self._get(replica.base_url + "/props", timeout)
                    slots = probes.total_slots(props) if status == 200 else None
                    load = probes.Load(slots, busy) if slots else None
                if load is not None and kind in ("auto", "metrics"):
                    self._load_kind[replica.name] = found
            if load is None and kind in ("auto", "slots"):
                status, body = await self._get(replica.base_url + "/slots", timeout)
                load = probes.from_slots(body) if status == 200 else None
                if load is not None and kind == "auto":
                    self._load_kind[replica.name] = "slots"
        except RETRYABLE:
            load = None
        if load is None:
            replica.capacity = None
            return
        replica.capacity = Capacity(load.slots, load.busy, replica.in_flight)
        self.metrics.reported_busy.labels(replica.name).set(load.busy)
        self.metrics.reported_slots.labels(replica.name).set(load.slots)

    # -- other routes ---------------------------------------------------------------------------
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


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _retry_after(resp: aiohttp.ClientResponse | None) -> float:
    try:
        return float(resp.headers.get("retry-after", "1")) if resp is not None else 1.0
    except ValueError:
        return 1.0


"""Shared by every locustfile here: raw per-request samples, a request budget, warm-up, SSE timing.

Imported by locustfiles only (it imports locust, so the harness never imports it). Environment
variables set by ``harness.load`` (or by hand):

- ``LOAD_SAMPLES_DIR`` — each process appends one JSON line per request to
  ``samples-<pid>.jsonl`` there (workers of a distributed run each write their own file).
- ``LOAD_REQUESTS`` — stop the run after this many measured (non warm-up) requests.
- ``LOAD_WARMUP_S`` — requests started in the first seconds are marked ``warmup`` (excluded).
- ``LOAD_MAX_TOKENS`` — completion length the LLM locustfiles ask for.
- ``LOAD_STOP_FILE`` — when this file appears the run stops (how the harness aborts a run whose
  threshold is already lost; one quit path, so Locust still writes complete reports).

Streamed requests are timed to their last byte here (Locust's own time covers only the headers),
and their time to first token, inter-token latency and output tokens per second are fired as
extra rows of request type ``METRIC`` so the Locust UI shows them too.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import gevent
from locust import events
from locust.exception import RescheduleTask
from locust.runners import MasterRunner, WorkerRunner

log = logging.getLogger("suite.load")

METRIC = "METRIC"
SAMPLES_DIR = os.environ.get("LOAD_SAMPLES_DIR", "")
REQUESTS = int(os.environ.get("LOAD_REQUESTS", "0") or 0)
WARMUP_S = float(os.environ.get("LOAD_WARMUP_S", "0") or 0)
MAX_TOKENS = int(os.environ.get("LOAD_MAX_TOKENS", "16") or 16)
API_KEY = os.environ.get("LOAD_API_KEY", "")
STOP_FILE = os.environ.get("LOAD_STOP_FILE", "")


def service_url(service: str) -> str:
    """Default ``host`` of a user class: the suite's settings (``SUITE_PORT_OFFSET`` etc.); ``--host`` wins."""
    try:
        from suite.settings import Settings

        return Settings().url(service)
    except Exception:  # the locustfile also runs outside the project (plain `locust -f`)
        base = {"gateway": 8000, "inference-chat": 8001, "rag": 8002, "embedding": 8003,
                "inference-code": 8004, "memory": 8005, "tools": 8020}[service]
        return f"http://127.0.0.1:{base + int(os.environ.get('SUITE_PORT_OFFSET', '0') or 0)}"


class _State:
    """Per-process counters (each Locust process has its own)."""

    environment = None
    file = None
    warm_until = 0.0
    started = 0  # measured requests handed out (local runner)
    completed = 0  # measured requests finished
    quitting = False


STATE = _State()


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    STATE.environment = environment
    if SAMPLES_DIR and not isinstance(environment.runner, MasterRunner):
        os.makedirs(SAMPLES_DIR, exist_ok=True)
        STATE.file = open(os.path.join(SAMPLES_DIR, f"samples-{os.getpid()}.jsonl"), "a", encoding="utf-8")


@events.test_start.add_listener
def _on_test_start(environment, **_kw) -> None:
    STATE.warm_until = time.time() + WARMUP_S
    if REQUESTS and isinstance(environment.runner, MasterRunner):
        gevent.spawn(_master_watch, environment)
    if STOP_FILE and not isinstance(environment.runner, WorkerRunner):
        gevent.spawn(_stop_file_watch, environment)


def _quit(environment, why: str) -> None:
    """The one way this module ends a run (budget reached, or asked to stop), at most once."""
    if STATE.quitting:
        return
    STATE.quitting = True
    log.info("stopping: %s", why)
    gevent.spawn(environment.runner.quit)  # not inline: quitting kills the calling greenlet


def _stop_file_watch(environment) -> None:
    while not STATE.quitting:
        if os.path.exists(STOP_FILE):
            with open(STOP_FILE, encoding="utf-8") as fh:
                _quit(environment, fh.read().strip() or "stop file found")
            return
        gevent.sleep(0.25)


@events.quitting.add_listener
def _on_quitting(environment, **_kw) -> None:
    # Locust rewrites its CSV once a second but not at shutdown: give its writer one more pass
    options = getattr(environment, "parsed_options", None)
    if getattr(options, "csv_prefix", None) and not isinstance(environment.runner, WorkerRunner):
        gevent.sleep(1.2)


@events.quit.add_listener
def _on_quit(**_kw) -> None:
    if STATE.file is not None:
        STATE.file.close()
        STATE.file = None


def _master_watch(environment) -> None:
    """Distributed mode: quit once the workers' reported measured requests reach ``LOAD_REQUESTS``.

    Workers report every few seconds, so a distributed run may overshoot by the requests in flight
    or finished since the last report; the harness judges every recorded sample.
    """
    baseline = None
    while True:
        gevent.sleep(0.5)
        done = sum(e.num_requests for (name, method), e in environment.runner.stats.entries.items()
                   if method != METRIC)
        if baseline is None and time.time() >= STATE.warm_until:
            baseline = done  # requests of the warm-up do not count towards the budget
        if baseline is not None and done - baseline >= REQUESTS:
            _quit(environment, f"request budget of {REQUESTS} reached ({done - baseline} reported)")
            return
        if STATE.quitting:
            return


def take() -> dict[str, Any]:
    """A ticket for one request: ``context=`` of the request.

    When the budget is spent the task is skipped (``RescheduleTask`` after a short pause) until the
    requests in flight finish and the run stops. In a single process the budget is exact; on
    workers the master stops the run instead.
    """
    if time.time() < STATE.warm_until:
        return {"warmup": True}
    if REQUESTS and not isinstance(STATE.environment.runner, WorkerRunner):
        if STATE.started >= REQUESTS:
            gevent.sleep(0.2)
            raise RescheduleTask()
        STATE.started += 1
    return {"warmup": False}


@events.request.add_listener
def _on_request(request_type, name, response_time, response_length, exception=None, context=None,
                start_time=None, **_kw) -> None:
    if request_type == METRIC:
        return
    context = context or {}
    warmup = bool(context.get("warmup", False))
    if STATE.file is not None:
        sample = {
            "name": name, "type": request_type, "start": start_time or time.time() - response_time / 1000,
            "ms": round(float(response_time), 3), "ok": exception is None, "bytes": int(response_length or 0),
            "error": None if exception is None else f"{type(exception).__name__}: {exception}"[:300],
            "warmup": warmup, "pid": os.getpid(),
        }
        for key in ("ttft_ms", "itl_ms", "tps", "tokens"):
            if context.get(key) is not None:
                sample[key] = context[key]
        STATE.file.write(json.dumps(sample) + "\n")
        STATE.file.flush()
    if warmup:
        return
    STATE.completed += 1
    runner = getattr(STATE.environment, "runner", None)
    if (REQUESTS and STATE.completed >= REQUESTS
            and runner is not None and not isinstance(runner, (WorkerRunner, MasterRunner))):
        _quit(STATE.environment, f"request budget of {REQUESTS} reached")


def stream_sse(user, path: str, body: dict[str, Any], name: str) -> None:
    """POST a streaming OpenAI request and time it to the last byte.

    Overrides Locust's header-only time with the full time, puts TTFT / mean ITL / output tokens
    per second in the request's context (so the raw sample has them) and fires them as ``METRIC``
    rows of their own.
    """
    ticket = take()
    t0 = time.perf_counter()
    token_times: list[float] = []
    size = 0
    with user.client.post(path, json=body, stream=True, catch_response=True, name=name,
                          context=ticket) as resp:
        if resp.status_code != 200:
            text = resp.text or ""
            resp.failure(f"HTTP {resp.status_code}: {text[:200]}")
            resp.request_meta["response_time"] = (time.perf_counter() - t0) * 1000
            return
        done = False
        # line by line: iter_content() waits for whole 1 KiB blocks, which would hide when tokens arrive
        raw = resp._response
        try:
            while True:
                line = raw.readline(b"\n")
                if not line:
                    break
                size += len(line)
                data = line.decode("utf-8", errors="replace").strip()
                if not data.startswith("data:"):
                    continue
                data = data[5:].strip()
                if data == "[DONE]":
                    done = True
                elif _has_text(data):
                    token_times.append(time.perf_counter())
        except Exception as exc:  # a connection cut mid-stream is a failed request, not a crash
            resp.failure(f"stream broken: {type(exc).__name__}: {exc}")
        end = time.perf_counter()
        resp.request_meta["response_time"] = (end - t0) * 1000
        resp.request_meta["response_length"] = size
        if not done and resp._manual_result is None:
            resp.failure("stream ended without [DONE]")
        elif not token_times and resp._manual_result is None:
            resp.failure("stream carried no tokens")
        elif resp._manual_result is None:
            resp.success()
        if token_times:
            ttft = (token_times[0] - t0) * 1000
            gaps = [b - a for a, b in zip(token_times, token_times[1:])]
            itl = sum(gaps) / len(gaps) * 1000 if gaps else None
            span = token_times[-1] - token_times[0]
            tps = (len(token_times) - 1) / span if span > 0 else None
            ticket = resp.request_meta["context"]  # Locust's copy of the context is what it reports
            ticket.update({"ttft_ms": round(ttft, 3), "tokens": len(token_times),
                           "itl_ms": None if itl is None else round(itl, 3),
                           "tps": None if tps is None else round(tps, 3)})
            if not ticket.get("warmup"):
                fire = user.environment.events.request.fire
                for row, value in ((f"{name} · ttft ms", ttft), (f"{name} · itl ms", itl),
                                   (f"{name} · tokens/s", tps)):
                    if value is not None:
                        fire(request_type=METRIC, name=row, response_time=value, response_length=0,
                             exception=None, context={}, start_time=time.time(), url=path, response=None)


def _has_text(data: str) -> bool:
    """An SSE data payload that carries generated text (chat delta or completion text)."""
    try:
        payload = json.loads(data)
    except ValueError:
        return False
    for choice in payload.get("choices") or []:
        if (choice.get("delta") or {}).get("content") or choice.get("text"):
            return True
    return False


def checked_post(user, path: str, body: dict[str, Any], name: str, expect: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
    """POST JSON within the budget; a non-2xx answer, or JSON lacking ``expect``, is a failure."""
    ticket = take()
    with user.client.post(path, json=body, catch_response=True, name=name, context=ticket,
                          headers=headers or {}) as resp:
        if resp.status_code >= 400:
            resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
            return
        if expect is not None:
            try:
                ok = expect in resp.json()
            except ValueError:
                ok = False
            if not ok:
                resp.failure(f"answer lacks '{expect}'")

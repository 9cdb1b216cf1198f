"""Shared by every locustfile here: the ``SuiteUser`` base class, raw per-request samples, a request
budget, warm-up, and the timing of streamed (SSE) answers.

Imported by locustfiles only (it imports locust, so the harness never imports it). A locustfile
subclasses ``SuiteUser``, names its ``service`` (the default host comes from the suite's settings;
``--host`` wins) and calls ``self.post_json(...)`` or ``self.post_stream(...)`` in its tasks.

Environment (the contract with ``harness.load.runner``; read once per Locust process when Locust
initialises, into ``LoadConfig``):

============================  ==========================================================  ============
variable                      meaning                                                      default
============================  ==========================================================  ============
``LOAD_SAMPLES_DIR``          each process appends one JSON line per request to            (no samples)
                              ``samples-<pid>.jsonl`` there; in a distributed run the
                              master writes ``samples-worker-<n>.jsonl`` per worker
                              from what the workers send it (below)
``LOAD_REQUESTS``             stop the run after this many measured (non warm-up)          0 (no budget)
                              requests
``LOAD_BUDGET_FILE``          the request budget as the harness moves it: JSON             (none: the
                              ``{"allowed": N, "final": bool}``. Tickets are handed        budget is
                              out up to ``allowed``; the run stops once they are all       final)
                              done and ``final`` is true (until then the users wait:
                              the harness may extend an undecided scenario)
``LOAD_WARMUP_S``             requests started in the first seconds are marked             0
                              ``warmup`` (recorded, never judged); the warm-up ends at
                              its first connection error (nothing listens: warming
                              up is pointless, and thousands of refused requests
                              would be fired in a second)
``LOAD_STOP_FILE``            when this file appears the run stops (how the harness        (none)
                              aborts a run whose threshold is decided against, or
                              one past its time cap; one quit path, so Locust still
                              writes complete reports)
``LOAD_MAX_TOKENS``           completion length the LLM users ask for                      16
``LOAD_PHASE``                stack phase: ``mixed.py`` adds embedding and RAG from 2      1
``LOAD_API_KEY``              sent as ``Authorization: Bearer`` and ``X-API-Key``          (none)
                              (with ``LOAD_AUTH_HEADER``: as that header alone, after
                              ``LOAD_AUTH_SCHEME``, a target file's part's way)
``LOAD_AUTH_HEADER``          the header that carries ``LOAD_API_KEY``                     (both above)
``LOAD_AUTH_SCHEME``          written before the key in that header ('' for none)          ``Bearer``
``LOAD_CHAT_MODEL``           the model name of chat at the gateway                        ``chat``
``LOAD_CODE_MODEL``           the model name of code at the gateway                        ``code``
``LOAD_EMBED_MODEL``          ``embedding.py`` posts OpenAI ``/v1/embeddings`` with this   (none: the
                              model instead of the suite's ``/embed``                      suite's)
``LOAD_RAG_COLLECTION``       collection ``rag_query.py`` / ``mixed.py`` query             ``load``
``LOAD_TOOLS_FILE``           file ``tools_read_file.py`` reads (inside the sandbox)       ``README.md``
``LOAD_TOOLS_RPS``            calls per second per tools user (stay under the tool         0.4
                              server's rate limit)
``LOAD_RATE``                 > 0: the **open model**. Requests arrive on a timetable at   0 (closed
                              this rate (req/s) whatever the answers do, each issued       loop)
                              in a greenlet of its own by the one user (``-u 1``);
                              latency counts from its scheduled start, so time spent
                              waiting for a slot (or for a late generator) shows
``LOAD_ARRIVALS``             ``poisson`` (exponential gaps) or ``constant``               poisson
``LOAD_SEED``                 the Poisson timetable's seed: the same seed, the same gaps    1
``LOAD_MAX_IN_FLIGHT``        open model: requests in flight at most; later arrivals       8
                              wait for a slot (their wait counts in their latency)
``SUITE_*``                   the suite's settings (``SUITE_PORT_OFFSET`` …): default      as ``suite``
                              hosts
============================  ==========================================================  ============

A raw sample (what ``harness/load/samples.py`` reads): ``name``, ``type`` (HTTP method), ``start``
(epoch s), ``ms`` (full duration), ``ok``, ``bytes``, ``error``, ``warmup``, ``pid`` and, for streamed
answers, ``ttft_ms``, ``itl_ms``, ``tps``, ``tokens``. In the open model ``start`` is the request's
*scheduled* start and ``ms`` / ``ttft_ms`` count from it; ``lag_ms`` is how long it waited before it
was sent (for a slot, or a late generator) and ``in_flight`` how many earlier requests had arrived
and not finished when it arrived (the queue as the client saw it). A measured request still running when the run
stopped (Locust kills it after ``--stop-timeout``) is written as the process stops, ``ok`` false and
``censored`` true, with the time it had run as ``ms``: never silently dropped.

**Distributed runs** (``--master`` and ``--worker``, on this host or others): a worker needs no
``LOAD_*`` variable and no shared folder. The master sends its configuration (this table's values,
the key, the stack's CA certificate as text) to every worker before the users start
(``suite_config``), and each worker sends its raw samples back with every stats report
(``report_to_master``, every 3 s and once more as it quits), so every request of every worker is
on the master's disk and the percentiles stay exact. The stop file, the budget and the warm-up
boundary stay the master's.

Streamed requests are timed to their last byte (Locust's own time covers only the headers), and their
time to first token, inter-token latency and output tokens per second are fired as extra rows of
request type ``METRIC`` so the Locust UI shows them too.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import gevent
import gevent.local
import gevent.lock
import gevent.pool
from locust import FastHttpUser, constant, events
from locust.exception import RescheduleTask, StopUser
from locust.runners import MasterRunner, WorkerRunner

log = logging.getLogger("suite.load")

METRIC = "METRIC"
BASE_PORTS = {"gateway": 8000, "inference-chat": 8001, "rag": 8002, "embedding": 8003,
              "inference-code": 8004, "memory": 8005, "tools": 8020}


@dataclass(frozen=True)
class LoadConfig:
    """The environment contract of the module docstring, read once."""

    samples_dir: str = ""
    requests: int = 0
    budget_file: str = ""
    warmup_s: float = 0.0
    stop_file: str = ""
    max_tokens: int = 16
    phase: int = 1
    api_key: str = ""
    rag_collection: str = "load"
    tools_file: str = "README.md"
    tools_rps: float = 0.4
    rate: float = 0.0
    arrivals: str = "poisson"
    seed: int = 1
    max_in_flight: int = 8
    auth_header: str = ""
    auth_scheme: str = "Bearer"
    chat_model: str = "chat"
    code_model: str = "code"
    embed_model: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> LoadConfig:
        def get(name: str, default: Any) -> Any:
            raw = env.get(name, "")
            return type(default)(raw) if raw else default

        d = cls()
        return cls(samples_dir=get("LOAD_SAMPLES_DIR", d.samples_dir), requests=get("LOAD_REQUESTS", d.requests),
                   budget_file=get("LOAD_BUDGET_FILE", d.budget_file),
                   warmup_s=get("LOAD_WARMUP_S", d.warmup_s), stop_file=get("LOAD_STOP_FILE", d.stop_file),
                   max_tokens=get("LOAD_MAX_TOKENS", d.max_tokens), phase=get("LOAD_PHASE", d.phase),
                   api_key=get("LOAD_API_KEY", d.api_key),
                   rag_collection=get("LOAD_RAG_COLLECTION", d.rag_collection),
                   tools_file=get("LOAD_TOOLS_FILE", d.tools_file), tools_rps=get("LOAD_TOOLS_RPS", d.tools_rps),
                   rate=get("LOAD_RATE", d.rate), arrivals=get("LOAD_ARRIVALS", d.arrivals),
                   seed=get("LOAD_SEED", d.seed), max_in_flight=get("LOAD_MAX_IN_FLIGHT", d.max_in_flight),
                   auth_header=get("LOAD_AUTH_HEADER", d.auth_header),
                   auth_scheme=env.get("LOAD_AUTH_SCHEME", d.auth_scheme),
                   chat_model=get("LOAD_CHAT_MODEL", d.chat_model), code_model=get("LOAD_CODE_MODEL", d.code_model),
                   embed_model=get("LOAD_EMBED_MODEL", d.embed_model))


def service_url(service: str) -> str:
    """Default ``host`` of a user class: the suite's settings (``SUITE_PORT_OFFSET`` etc.)."""
    try:
        from suite.settings import Settings

        return Settings().url(service)
    except Exception:  # the locustfile also runs outside the project (plain `locust -f`)
        offset = int(os.environ.get("SUITE_PORT_OFFSET", "0") or 0)
        return f"http://127.0.0.1:{BASE_PORTS[service] + offset}"


def is_connection_error(exception: BaseException | None) -> bool:
    """No HTTP answer at all (refused, reset, unreachable): ``_status_problem``'s "no answer"."""
    return exception is not None and (isinstance(exception, (ConnectionError, OSError))
                                      or str(exception).startswith("no answer"))


class Recorder:
    """One per Locust process: writes the raw samples, hands out the request budget, stops the run.

    Built when Locust initialises (``events.init``) and kept on ``environment.suite_load``.
    """

    def __init__(self, environment, config: LoadConfig) -> None:
        self.environment = environment
        self.config = config
        self.file = None
        self.pending: list[dict[str, Any]] = []  # a worker's samples not yet sent to the master
        self.worker_files: dict[str, Any] = {}  # the master's file per worker
        self.warm_until = 0.0
        self.started = 0  # measured requests handed out (local runner)
        self.completed = 0  # measured requests finished
        self.quitting = False
        self.in_flight: dict[int, tuple[str, float]] = {}  # ticket -> (request name, start): cut off if left
        self.numbers = itertools.count(1)
        self._budget = (config.requests, True)
        self._budget_mtime = 0
        self.local = gevent.local.local()  # open model: the ticket an arrival's greenlet was given
        if config.samples_dir and not isinstance(environment.runner, (MasterRunner, WorkerRunner)):
            os.makedirs(config.samples_dir, exist_ok=True)
            self.file = open(os.path.join(config.samples_dir, f"samples-{os.getpid()}.jsonl"), "a",
                             encoding="utf-8")
        ev = environment.events
        if isinstance(environment.runner, WorkerRunner):
            environment.runner.register_message("suite_config", self.on_config)
            ev.report_to_master.add_listener(self.on_report_to_master)
        if isinstance(environment.runner, MasterRunner):
            ev.worker_report.add_listener(self.on_worker_report)
        ev.test_start.add_listener(self.on_test_start)
        ev.request.add_listener(self.on_request)
        ev.test_stop.add_listener(self.on_test_stop)
        ev.quitting.add_listener(self.on_quitting)
        ev.quit.add_listener(self.on_quit)

    @property
    def runner(self):
        return self.environment.runner

    # -- the request budget ---------------------------------------------------------------------
    def budget(self) -> tuple[int, bool]:
        """``(allowed, final)``: the requests that may be handed out now, and whether that is the end
        (``LOAD_BUDGET_FILE``, re-read when it changes; without it ``LOAD_REQUESTS``, final)."""
        path = self.config.budget_file
        if path:
            try:
                mtime = os.stat(path).st_mtime_ns
                if mtime != self._budget_mtime:
                    with open(path, encoding="utf-8") as fh:
                        data = json.load(fh)
                    self._budget, self._budget_mtime = (int(data["allowed"]), bool(data["final"])), mtime
            except (OSError, ValueError, KeyError, TypeError):
                pass  # mid-replace or unreadable: the last budget read stands
        return self._budget

    def ticket(self, name: str = "") -> dict[str, Any]:
        """A ticket for one request named ``name``: its ``context=``.

        When the budget is spent the task is skipped (``RescheduleTask`` after a short pause) until the
        requests in flight finish and the run stops, or the harness extends the budget. In a single
        process the budget is exact; on workers the master stops the run instead.
        """
        given = getattr(self.local, "ticket", None)
        if given is not None:  # open model: taken when the request arrived (``arrival``)
            if given.get("ticket") in self.in_flight:
                self.in_flight[given["ticket"]] = (name, given["scheduled"])
            return given
        if time.time() < self.warm_until:
            return {"warmup": True}
        if self.config.requests and not isinstance(self.runner, WorkerRunner):
            if self.started >= self.budget()[0]:
                gevent.sleep(0.2)
                raise RescheduleTask()
            self.started += 1
        number = next(self.numbers)
        self.in_flight[number] = (name, time.time())
        return {"warmup": False, "ticket": number}

    def arrival(self, scheduled: float) -> dict[str, Any] | None:
        """Open model: the ticket of a request that arrives at ``scheduled`` (epoch s), or None while
        the budget is spent (the timetable waits for an extension or the end of the run)."""
        if scheduled < self.warm_until:
            return {"warmup": True, "scheduled": scheduled}
        if self.config.requests and not isinstance(self.runner, WorkerRunner):
            if self.started >= self.budget()[0]:
                return None
            self.started += 1
        number = next(self.numbers)
        queue = len(self.in_flight)  # arrived before it and not finished: in flight or waiting for a slot
        self.in_flight[number] = ("", scheduled)
        return {"warmup": False, "ticket": number, "scheduled": scheduled, "in_flight": queue}

    # -- Locust events --------------------------------------------------------------------------
    def on_test_start(self, environment, **_kw) -> None:
        if isinstance(self.runner, MasterRunner):  # before the spawn messages: workers start configured
            self.runner.send_message("suite_config", {**asdict(self.config), "ca_pem": _ca_pem()})
        self.warm_until = time.time() + self.config.warmup_s
        if self.config.requests and isinstance(self.runner, MasterRunner):
            gevent.spawn(self._master_watch)
        if not isinstance(self.runner, WorkerRunner):
            gevent.spawn(self._watch)

    def on_request(self, request_type, name, response_time, response_length, exception=None, context=None,
                   start_time=None, **_kw) -> None:
        if request_type == METRIC:
            return
        context = context or {}
        warmup = bool(context.get("warmup", False))
        self.in_flight.pop(context.get("ticket"), None)
        if self.file is not None or isinstance(self.runner, WorkerRunner):
            sample = {
                "name": name, "type": request_type, "start": start_time or time.time() - response_time / 1000,
                "ms": round(float(response_time), 3), "ok": exception is None, "bytes": int(response_length or 0),
                "error": None if exception is None else f"{type(exception).__name__}: {exception}"[:300],
                "warmup": warmup, "pid": os.getpid(),
            }
            for key in (*StreamTiming.FIELDS, *SCHEDULE_FIELDS):
                if context.get(key) is not None:
                    sample[key] = context[key]
            self._write(sample)
        if warmup:
            if is_connection_error(exception) and time.time() < self.warm_until:
                log.warning("warm-up ended at its first connection error: %s", exception)
                self.warm_until = time.time()
            return
        self.completed += 1
        self._maybe_done()

    def on_test_stop(self, environment, **_kw) -> None:
        """Measured requests still in flight were killed (past ``--stop-timeout``): written as censored."""
        now = time.time()
        for name, started in list(self.in_flight.values()):
            self._write({"name": name or "(request)", "type": "POST", "start": started,
                         "ms": round((now - started) * 1000, 3), "ok": False, "censored": True, "bytes": 0,
                         "error": f"cut off: still running after {now - started:.1f} s when the run stopped",
                         "warmup": False, "pid": os.getpid()})
        self.in_flight.clear()

    def on_quitting(self, environment, **_kw) -> None:
        # Locust rewrites its CSV once a second but not at shutdown: give its writer one more pass
        options = getattr(environment, "parsed_options", None)
        if getattr(options, "csv_prefix", None) and not isinstance(self.runner, WorkerRunner):
            gevent.sleep(1.2)

    def on_quit(self, **_kw) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        for fh in self.worker_files.values():
            fh.close()
        self.worker_files.clear()

    def _write(self, sample: dict[str, Any]) -> None:
        if isinstance(self.runner, WorkerRunner):
            self.pending.append(sample)
        elif self.file is not None:
            self.file.write(json.dumps(sample) + "\n")
            self.file.flush()

    # -- distributed runs -----------------------------------------------------------------------
    def on_config(self, msg, **_kw) -> None:
        """A worker: the master's configuration (the env contract's values and the stack's CA)."""
        data = dict(msg.data or {})
        ca_pem = data.pop("ca_pem", None)
        known = {f.name for f in fields(LoadConfig)}
        self.config = LoadConfig(**{k: v for k, v in data.items() if k in known})
        if ca_pem:
            TRUST["cadata"] = ca_pem

    def on_report_to_master(self, client_id, data, **_kw) -> None:
        """A worker: its samples ride on each stats report (the last one is sent as it quits)."""
        data["suite_samples"], self.pending = self.pending, []

    def on_worker_report(self, client_id, data, **_kw) -> None:
        """The master: one file per worker of the samples it sent."""
        samples = data.get("suite_samples") or []
        if not samples or not self.config.samples_dir:
            return
        fh = self.worker_files.get(client_id)
        if fh is None:
            os.makedirs(self.config.samples_dir, exist_ok=True)
            name = f"samples-worker-{len(self.worker_files) + 1}.jsonl"
            fh = self.worker_files[client_id] = open(os.path.join(self.config.samples_dir, name), "a",
                                                     encoding="utf-8")
        fh.write("".join(json.dumps(s) + "\n" for s in samples))
        fh.flush()

    # -- stopping -------------------------------------------------------------------------------
    def quit(self, why: str) -> None:
        """The one way a run is ended from here (budget reached, or asked to stop), at most once."""
        if self.quitting:
            return
        self.quitting = True
        log.info("stopping: %s", why)
        gevent.spawn(self.runner.quit)  # not inline: quitting kills the calling greenlet

    def _maybe_done(self) -> None:
        """Quit once the final budget is done (a local runner; the master watches its workers)."""
        if not self.config.requests or self.runner is None or isinstance(self.runner, (WorkerRunner, MasterRunner)):
            return
        allowed, final = self.budget()
        if final and self.completed >= allowed:
            self.quit(f"request budget of {allowed} reached")

    def _watch(self) -> None:
        """The stop file, and a budget the harness made final after every ticket was done."""
        path = self.config.stop_file
        while not self.quitting:
            if path and os.path.exists(path):
                with open(path, encoding="utf-8") as fh:
                    self.quit(fh.read().strip() or "stop file found")
                return
            self._maybe_done()
            gevent.sleep(0.25)

    def _master_watch(self) -> None:
        """Distributed mode: quit once the workers' reported measured requests reach the final budget.

        Workers report every few seconds, so a distributed run may overshoot by the requests in flight
        or finished since the last report; the harness judges every recorded sample.
        """
        baseline = None
        while not self.quitting:
            gevent.sleep(0.5)
            done = sum(e.num_requests for (_name, method), e in self.runner.stats.entries.items()
                       if method != METRIC)
            if baseline is None and time.time() >= self.warm_until:
                baseline = done  # requests of the warm-up do not count towards the budget
            allowed, final = self.budget()
            if baseline is not None and final and done - baseline >= allowed:
                self.quit(f"request budget of {allowed} reached ({done - baseline} reported)")


SCHEDULE_FIELDS = ("lag_ms", "in_flight")  # open model: written into the raw sample


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    config = LoadConfig.from_env()
    environment.suite_load = Recorder(environment, config)
    if config.rate > 0:  # one user issues every request: its connection pool must hold them all
        for user_class in environment.user_classes or []:
            user_class.concurrency = max(user_class.concurrency, config.max_in_flight)


def from_schedule(meta: dict[str, Any], ticket: dict[str, Any]) -> None:
    """Open model: count a request's time from its scheduled start (Locust timed it from when it was
    sent), and note how late it was sent: what a user who asked at that moment waited."""
    scheduled = ticket.get("scheduled")
    if scheduled is None:
        return
    lag_s = max(0.0, meta["start_time"] - scheduled)
    meta["start_time"] = scheduled
    meta["response_time"] += lag_s * 1000
    meta["context"]["lag_ms"] = round(lag_s * 1000, 3)  # Locust's copy of the context is what it reports


def timetable(rate: float, arrivals: str, seed: int, start: float) -> Iterator[float]:
    """Scheduled starts (epoch s) from ``start`` on: evenly ``1/rate`` apart, or a Poisson process
    (exponential gaps of mean ``1/rate`` from a generator seeded with ``seed``)."""
    rng = random.Random(seed)
    at = start
    while True:
        at += rng.expovariate(rate) if arrivals == "poisson" else 1.0 / rate
        yield at


@dataclass
class StreamTiming:
    """Token arrival times of one streamed OpenAI answer, fed its SSE lines as they arrive."""

    FIELDS = ("ttft_ms", "itl_ms", "tps", "tokens")

    t0: float
    token_times: list[float] = field(default_factory=list)
    done: bool = False
    size: int = 0

    def line(self, raw: bytes) -> None:
        self.size += len(raw)
        data = raw.decode("utf-8", errors="replace").strip()
        if not data.startswith("data:"):
            return
        data = data[5:].strip()
        if data == "[DONE]":
            self.done = True
        elif _has_text(data):
            self.token_times.append(time.perf_counter())

    def problem(self) -> str | None:
        """Why the stream is a failed request, or None."""
        if not self.done:
            return "stream ended without [DONE]"
        if not self.token_times:
            return "stream carried no tokens"
        return None

    def figures(self) -> dict[str, float | None]:
        """TTFT and mean ITL in ms, output tokens per second, tokens (empty without tokens)."""
        times = self.token_times
        if not times:
            return {}
        gaps = [b - a for a, b in zip(times, times[1:])]
        span = times[-1] - times[0]
        return {"ttft_ms": round((times[0] - self.t0) * 1000, 3), "tokens": len(times),
                "itl_ms": round(sum(gaps) / len(gaps) * 1000, 3) if gaps else None,
                "tps": round((len(times) - 1) / span, 3) if span > 0 else None}


def sse_lines(resp) -> Iterator[bytes]:
    """The body of a streamed response, line by line as each line arrives.

    Byte-wise reads: ``iter_content`` blocks until a whole chunk is in, so any larger chunk would
    hold a token's line back until the next token arrives and hide when it came.
    """
    line = bytearray()
    for byte in resp.iter_content(chunk_size=1, decode_content=False):
        line += byte
        if byte == b"\n":
            yield bytes(line)
            line.clear()
    if line:
        yield bytes(line)


def _status_problem(resp) -> str | None:
    """Why an answer is a failed request by its status (no answer at all included), or None."""
    if resp.status_code == 0:  # no HTTP answer: refused, reset, timed out
        error = getattr(resp, "error", None)
        return f"no answer: {type(error).__name__}: {error}" if error else "no answer"
    if resp.status_code >= 400:
        return f"HTTP {resp.status_code}: {(resp.text or '')[:200]}"
    return None


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


TRUST: dict[str, str] = {}  # a worker's CA certificate as text, from the master (no file needed there)


def _ca_pem() -> str | None:
    if not STACK_CA:
        return None
    try:
        with open(STACK_CA, encoding="ascii") as fh:
            return fh.read()
    except OSError:
        return None


def stack_ca() -> str | None:
    """The CA an https stack's certificates are verified against: ``LOAD_CA_FILE``, else the suite's
    ``tls.ca_file`` when it exists."""
    explicit = os.environ.get("LOAD_CA_FILE")
    if explicit:
        return explicit
    try:
        from suite.settings import Settings

        ca = Settings().ca_file
        return str(ca) if ca.is_file() else None
    except Exception:  # outside the project (plain `locust -f`): the system's trust store
        return None


def verifying_context(cafile: str | None = None):
    """FastHttpUser's TLS context: the stack's CA verified, host names checked (Locust's default is
    ``insecure``, which checks nothing)."""
    import gevent.ssl

    if TRUST.get("cadata"):
        return gevent.ssl.create_default_context(cadata=TRUST["cadata"])
    return gevent.ssl.create_default_context(cafile=STACK_CA or cafile)


STACK_CA = stack_ca()


class SuiteUser(FastHttpUser):
    """What every user here shares: the host of its ``service``, no wait, generous timeouts, the
    request budget, checked JSON / streamed requests that leave raw samples, and verified TLS.

    With ``LOAD_RATE`` set (the open model) the one user's only task is the timetable
    (``_arrivals``): at each scheduled start it takes a ticket and issues one of the locustfile's
    own tasks in a greenlet of its own, at most ``LOAD_MAX_IN_FLIGHT`` at once; the others wait for a
    slot, their wait counted in their latency. Arrivals never wait for answers, so a server that
    falls behind shows as a growing queue and growing latencies instead of a slower client (what a
    closed loop of N users hides: coordinated omission)."""

    abstract = True
    service = "gateway"
    wait_time = constant(0)
    network_timeout = 300.0
    connection_timeout = 10.0
    insecure = False
    ssl_context_factory = staticmethod(verifying_context)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "host" not in vars(cls):  # Locust's --host replaces it
            cls.host = service_url(cls.service)

    def __init__(self, environment) -> None:
        super().__init__(environment)
        if self.config.rate > 0:
            self._requests = list(self.tasks)  # the locustfile's tasks, issued on the timetable
            self.tasks = [SuiteUser._arrivals]
            self._issued = gevent.pool.Group()

    def _arrivals(self) -> None:
        """The open model's timetable (class docstring); ends the user once the run is over."""
        cfg = self.config
        slots = gevent.lock.Semaphore(max(1, cfg.max_in_flight))
        times = timetable(cfg.rate, cfg.arrivals, cfg.seed, time.time())
        try:
            for at in times:
                if self.load.quitting:
                    break
                gevent.sleep(max(0.0, at - time.time()))
                ticket = self.load.arrival(at)
                while ticket is None and not self.load.quitting:  # budget spent: an extension may come
                    gevent.sleep(0.2)
                    ticket = self.load.arrival(time.time())
                    if ticket is not None:  # the timetable goes on from now, not in a burst of the missed
                        times = timetable(cfg.rate, cfg.arrivals, cfg.seed + self.load.started, ticket["scheduled"])
                if ticket is None:
                    break
                self._issued.spawn(self._issue, ticket, slots)
            self._issued.join()
        finally:
            self._issued.kill(block=False)  # stopped past --stop-timeout: the rest are cut off (censored)
        raise StopUser()

    def _issue(self, ticket: dict[str, Any], slots) -> None:
        with slots:
            self.load.local.ticket = ticket
            try:
                random.choice(self._requests)(self)
            finally:
                self.load.local.ticket = None

    @property
    def load(self) -> Recorder:
        return self.environment.suite_load

    @property
    def config(self) -> LoadConfig:
        return self.load.config

    def auth_headers(self) -> dict[str, str]:
        key, config = self.config.api_key, self.config
        if key and config.auth_header:  # a target file's part: its own header, nothing else
            return {config.auth_header: f"{config.auth_scheme} {key}" if config.auth_scheme else key}
        return {"Authorization": f"Bearer {key}", "X-API-Key": key} if key else {}

    def post_json(self, path: str, body: dict[str, Any], name: str, expect: str | None = None,
                  headers: dict[str, str] | None = None) -> None:
        """POST JSON within the budget; a non-2xx answer, or JSON lacking ``expect``, is a failure."""
        ticket = self.load.ticket(name)
        with self.client.post(path, json=body, catch_response=True, name=name, context=ticket,
                              headers={**self.auth_headers(), **(headers or {})}) as resp:
            from_schedule(resp.request_meta, ticket)
            problem = _status_problem(resp)
            if problem:
                resp.failure(problem)
                return
            if expect is not None:
                try:
                    ok = expect in resp.json()
                except (ValueError, TypeError):
                    ok = False
                if not ok:
                    resp.failure(f"answer lacks '{expect}'")

    def post_stream(self, path: str, body: dict[str, Any], name: str) -> None:
        """POST a streaming OpenAI request and time it to the last byte.

        Replaces Locust's header-only time with the full time, puts TTFT / mean ITL / output tokens
        per second in the request's context (so the raw sample has them) and fires them as ``METRIC``
        rows of their own.
        """
        ticket = self.load.ticket(name)
        timing = StreamTiming(time.perf_counter() - max(0.0, time.time() - ticket.get("scheduled", time.time())))
        with self.client.post(path, json=body, stream=True, catch_response=True, name=name,
                              context=ticket, headers=self.auth_headers()) as resp:
            meta = resp.request_meta  # what Locust reports when the block ends
            from_schedule(meta, ticket)  # TTFT and the full time count from the schedule (timing.t0)
            problem = _status_problem(resp)
            if problem:
                resp.failure(problem)
                meta["response_time"] = (time.perf_counter() - timing.t0) * 1000
                return
            problem = None
            try:
                for line in sse_lines(resp):
                    timing.line(line)
            except Exception as exc:  # a connection cut mid-stream is a failed request, not a crash
                problem = f"stream broken: {type(exc).__name__}: {exc}"
            meta["response_time"] = (time.perf_counter() - timing.t0) * 1000
            meta["response_length"] = timing.size
            problem = problem or timing.problem()
            if problem:
                resp.failure(problem)
            else:
                resp.success()
            figures = timing.figures()
            meta["context"].update(figures)  # Locust's copy of the context is what it reports
            if figures and not meta["context"].get("warmup"):
                self._fire_metrics(name, path, figures)

    def _fire_metrics(self, name: str, path: str, figures: dict[str, float | None]) -> None:
        fire = self.environment.events.request.fire
        for row, key in ((f"{name} · ttft ms", "ttft_ms"), (f"{name} · itl ms", "itl_ms"),
                         (f"{name} · tokens/s", "tps")):
            if figures.get(key) is not None:
                fire(request_type=METRIC, name=row, response_time=figures[key], response_length=0,
                     exception=None, context={}, start_time=time.time(), url=path, response=None)

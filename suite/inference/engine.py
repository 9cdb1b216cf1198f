"""Continuous batching over llama-cpp-python's low-level API (no HTTP here).

One engine thread owns a ``llama_context`` created with ``n_seq_max = slots`` (a unified KV cache by
default; one KV stream per sequence with ``batch_invariant``).
Each step is one ``llama_decode`` of a single batch holding the next token of every generating
sequence plus a chunk of the prompt of sequences still being prefilled; then every sequence whose
logits came out samples with its own sampler chain (greedy requests, temperature 0 with at most a
repeat penalty, take the arg-max of their logits row in numpy instead: the same token, without
copying the 262k-entry vocabulary into a candidate array). Requests reach the thread through a bounded waiting list; results go back through a
per-request ``sink`` callable (``AsyncSink`` for asyncio), all of a step's events together after
its sampling, so an asyncio consumer is woken once per step rather than once per token.
A finished or cancelled sequence has its KV cells removed (``llama_memory_seq_rm``) before its slot
is reused, so sequences never see each other's cache.

Liveness: every decode step stamps the time; ``liveness()`` names what is wrong when the thread has
died or no step came for ``stall_s`` while requests are in flight (the service's ``/health`` fails
on it and the supervisor restarts the process), and ``submit`` refuses at once instead of queueing
a request that could never finish.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import llama_cpp
import numpy as np
from llama_cpp._utils import suppress_stdout_stderr

from suite.inference.sampling import (
    SamplingParams,
    build_sampler,
    free_sampler,
    greedy_repeat_penalty,
    greedy_token,
    token_piece,
)
from suite.inference.textstream import TextStream

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """Root of the engine's errors."""


class EngineOverloaded(EngineError):
    """Every slot is busy and the waiting list is full."""


class EngineStopped(EngineError):
    """The engine is not running (not started yet, or shut down)."""


MAX_TOP_LOGPROBS = 20  # OpenAI's own limit on top_logprobs


@dataclass
class TokenLogprob:
    """One generated token's log-probability and the most likely alternatives at its position."""

    token: int  # the chosen token id
    logprob: float  # its log-probability under the model's raw distribution (log-softmax of the logits row)
    top: list[tuple[int, float]] = field(default_factory=list)  # the k most likely (token id, logprob), most likely first


@dataclass
class GenerationRequest:
    """One prompt to generate from: prompt tokens, limits, stop strings, sampling, choices.

    ``n`` choices share one prefill of the prompt (its KV cells are shared with
    ``llama_memory_seq_cp``) and then sample independently; ``logprobs`` (None: off; k >= 0) asks
    every event for a ``TokenLogprob`` per token with the top k alternatives. ``samplers``: n sampler
    chains the caller built off the engine's lock (``sampling.build_sampler`` in a worker thread);
    the engine owns and frees them from the moment ``submit`` is called, also when it refuses the
    request. None: the engine thread builds them, outside its lock.
    """

    prompt_tokens: list[int]
    max_tokens: int
    stop: list[str] = field(default_factory=list)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    logprobs: int | None = None
    samplers: list | None = None
    metered: bool = True  # False: not counted in the token / time-to-first-token metrics (readiness probes)


@dataclass
class Event:
    """What the engine tells a request: new text, and at the end a finish reason or an error.

    With ``n`` > 1 every choice has its own events (``index``) and its own final event; the request
    is done when all n finals arrived. ``logprobs`` (when asked for) has one entry per token of
    ``tokens``.
    """

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    completion_tokens: int = 0
    index: int = 0
    logprobs: list[TokenLogprob] | None = None

    @property
    def final(self) -> bool:
        return self.finish_reason is not None or self.error is not None


Sink = Callable[[Event], None]


@dataclass
class EngineHooks:
    """Metric callbacks, called on the engine thread."""

    first_token: Callable[[float], None] = lambda seconds: None
    tokens: Callable[[int], None] = lambda n: None


class Handle:
    """A submitted request; ``cancel()`` frees its slot at the engine's next step."""

    def __init__(self, engine: Engine, request: GenerationRequest, sink: Sink) -> None:
        self.engine = engine
        self.request = request
        self.sink = sink
        self.submitted = time.perf_counter()
        self.cancelled = False

    def cancel(self) -> None:
        self.engine.cancel(self)


class _Mailbox:
    """Events from engine threads to one event loop, handed over in one wake-up per burst.

    ``call_soon_threadsafe`` per token costs the loop a self-pipe write, a wake-up and a callback
    each; the engine posts all of a step's events at once, so only the first post of a burst
    schedules a delivery and the delivery takes everything posted by then.
    """

    _of_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # weak: the registry's value must not keep its key alive
        self.items: deque[tuple[AsyncSink, Event]] = deque()
        self.scheduled = False

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        box = cls._of_loop.get(loop)
        if box is None:
            box = cls._of_loop[loop] = cls(loop)
        return box

    def post(self, sink: AsyncSink, event: Event) -> None:
        """Any thread. Append first, then schedule only if no delivery is pending: a pending delivery
        clears ``scheduled`` before it takes the items, so it will see this one."""
        self.items.append((sink, event))
        if not self.scheduled:
            self.scheduled = True
            loop = self.loop()
            try:
                if loop is None:
                    raise RuntimeError("event loop is gone")
                loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop closed: nobody is listening any more
                self.items.clear()
                self.scheduled = False

    def _deliver(self) -> None:
        self.scheduled = False
        items = self.items
        while items:
            sink, event = items.popleft()
            sink.deliver(event)


class AsyncSink:
    """Hands events from the engine thread to a consumer on the caller's event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._mailbox = _Mailbox.of(self.loop)
        self._events: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def __call__(self, event: Event) -> None:
        """Engine thread: queue ``event`` for the consumer."""
        self._mailbox.post(self, event)

    def deliver(self, event: Event) -> None:
        """Event loop: make ``event`` available to ``get`` / ``get_all``."""
        self._events.append(event)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float | None = None) -> Event:
        """The next event; ``TimeoutError`` after ``timeout`` seconds without one."""
        if not self._events:
            await self._wait(timeout)
        return self._events.popleft()

    async def get_all(self, timeout: float | None = None) -> list[Event]:
        """Every event delivered so far (waiting for the first one), in order."""
        if not self._events:
            await self._wait(timeout)
        events = list(self._events)
        self._events.clear()
        return events

    async def _wait(self, timeout: float | None) -> None:
        self._waiter = self.loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await self._waiter
        finally:
            self._waiter = None


@dataclass
class _Seq:
    handle: Handle
    seq_id: int
    sampler: object
    pending: list[int]
    text: TextStream
    greedy_penalty: float | None = None  # set: sampled by ``sampling.greedy_token`` with this penalty
    pos: int = 0
    generated: list[int] = field(default_factory=list)
    prefilling: bool = True


class Engine:
    """N slots over one llama.cpp context; thread-safe ``submit`` / ``cancel`` from any thread."""

    def __init__(self, llama: llama_cpp.Llama, *, slots: int, queue_limit: int, n_ctx: int,
                 n_batch: int = 512, prefill_chunk: int = 256, batch_invariant: bool = False,
                 hooks: EngineHooks | None = None, stall_s: float = 30.0) -> None:
        self.llama = llama
        self.batch_invariant = batch_invariant
        self.slots = slots
        self.queue_limit = queue_limit
        self.n_ctx = n_ctx
        self.n_batch = max(n_batch, slots)
        self.prefill_chunk = max(1, prefill_chunk)
        self.hooks = hooks or EngineHooks()
        self.vocab = llama._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self._cond = threading.Condition()
        self._waiting: deque[Handle] = deque()
        self._in_flight = 0
        self._active: list[_Seq] = []
        self._free_ids = list(range(slots))
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ctx = None
        self._batch = None
        self._pieces: dict[int, bytes] = {}
        self._own_model = None
        self.steps = 0
        self.stall_s = stall_s
        self._progress_at = time.monotonic()  # last decode step, or when work arrived at an idle engine
        self._failed: str | None = None  # why the engine thread died

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Create the context and batch, then start the engine thread."""
        model = self.llama._model.model
        if self.batch_invariant:
            # Repacked CPU weights use one kernel for groups of rows and another for the rest, so a
            # row's numbers depend on the batch around it; plain weights give the same logits for a
            # sequence whatever shares its batch.
            mparams = llama_cpp.llama_model_params.from_buffer_copy(self.llama.model_params)
            mparams.use_extra_bufts = False
            with suppress_stdout_stderr(disable=self.llama.verbose):
                model = self._own_model = llama_cpp.llama_model_load_from_file(
                    self.llama.model_path.encode("utf-8"), mparams)
            if not model:
                raise EngineError(f"llama.cpp could not load {self.llama.model_path}")
        params = llama_cpp.llama_context_params.from_buffer_copy(self.llama.context_params)
        params.n_ctx = self.n_ctx * self.slots
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = self.slots
        # Default: one KV buffer shared by all sequences, kept apart by their seq ids (the attention
        # mask only lets a token see cells of its own sequence), so a step over 8 sequences is one
        # attention pass: 165 tok/s at 8 streams here against 78 with a stream per sequence
        # (docs/benchmarks.md). The attention kernels then see a KV length that depends on the
        # other sequences, which moves logits in the last bits; batch_invariant keeps one stream
        # per sequence so a sequence's output is bit-identical to decoding it alone.
        params.kv_unified = not self.batch_invariant
        with suppress_stdout_stderr(disable=self.llama.verbose):
            self._ctx = llama_cpp.llama_init_from_model(model, params)
        if not self._ctx:
            raise EngineError("llama.cpp could not create the batched context")
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        # ctypes builds a new pointer object on every attribute access of the struct: keep them, and
        # write the one-sequence-per-token count once (llama_decode does not change it).
        self._rows = (batch.token, batch.pos, [batch.seq_id[i] for i in range(self.n_batch)], batch.logits)
        for i in range(self.n_batch):
            batch.n_seq_id[i] = 1
        self._thread = threading.Thread(target=self._run, name="inference-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, fail what is still running or waiting, free the context."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("engine thread did not stop within %.0fs; leaking its context", timeout)
                return
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._own_model is not None:
            llama_cpp.llama_model_free(self._own_model)
            self._own_model = None

    # -- requests ---------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest, sink: Sink) -> Handle:
        """Queue a request; raises ``ValueError`` for a request no slot could serve,
        ``EngineOverloaded`` when slots and waiting list are full and ``EngineStopped`` when the
        engine cannot serve (stopped, dead or stuck). A refused request's samplers are freed."""
        try:
            self._check(request)
            handle = Handle(self, request, sink)
            with self._cond:
                if self._stopping or self._thread is None:
                    raise EngineStopped("inference engine is not running")
                problem = self.liveness()
                if problem:
                    raise EngineStopped(problem)
                if self._in_flight >= self.slots + self.queue_limit:
                    raise EngineOverloaded("model overloaded")
                if self._in_flight == 0:
                    self._progress_at = time.monotonic()  # an idle engine is not a stuck one
                self._in_flight += 1
                self._waiting.append(handle)
                self._cond.notify_all()
        except BaseException:
            _free_all(request.samplers)
            request.samplers = None
            raise
        return handle

    def _check(self, request: GenerationRequest) -> None:
        if not request.prompt_tokens:
            raise ValueError("prompt has no tokens")
        if len(request.prompt_tokens) >= self.n_ctx:
            raise ValueError(f"Requested tokens ({len(request.prompt_tokens)}) exceed context window "
                             f"of {self.n_ctx}")
        if not 1 <= request.n <= self.slots:
            raise ValueError(f"n must be between 1 and {self.slots} (this server's slots), not {request.n}")
        if request.logprobs is not None and not 0 <= request.logprobs <= MAX_TOP_LOGPROBS:
            raise ValueError(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}, not {request.logprobs}")
        if request.samplers is not None and len(request.samplers) != request.n:
            raise ValueError(f"{len(request.samplers)} sampler chains for n = {request.n}")

    def cancel(self, handle: Handle) -> None:
        with self._cond:
            handle.cancelled = True
            self._cond.notify_all()

    @property
    def active(self) -> int:
        """Slots holding a sequence right now."""
        return self.slots - len(self._free_ids)

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiting)

    # -- liveness ---------------------------------------------------------------------------------
    @property
    def stalled_s(self) -> float:
        """Seconds without a decode step while requests are in flight (0 when idle)."""
        return time.monotonic() - self._progress_at if self._in_flight else 0.0

    def liveness(self) -> str | None:
        """Why this engine cannot serve (its thread died, or it is stuck), or None when it can."""
        if self._failed:
            return self._failed
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            return "inference engine thread is not running"
        stalled = self.stalled_s
        if stalled > self.stall_s:
            return (f"inference engine stuck: no decode step for {stalled:.1f}s with {self._in_flight} "
                    f"request(s) in flight (limit {self.stall_s:g}s)")
        return None

    # -- engine thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._drop_cancelled()
                    self._admit()
                    if self._stopping:
                        break
                    if not self._active:
                        self._cond.wait()
                        continue
                self._step()
        except Exception as exc:  # an engine that dies must not leave requests hanging
            log.exception("inference engine failed")
            self._failed = f"inference engine failed: {type(exc).__name__}: {exc}"
            self._fail_all(self._failed)
            return
        self._fail_all("inference engine stopped")

    def _drop_cancelled(self) -> None:
        for handle in [h for h in self._waiting if h.cancelled]:
            self._waiting.remove(handle)
            self._in_flight -= 1
        for seq in [s for s in self._active if s.handle.cancelled]:
            self._release(seq)

    def _admit(self) -> None:
        while self._waiting and self._free_ids and not self._stopping:
            handle = self._waiting.popleft()
            try:
                sampler = build_sampler(handle.request.sampling, self.vocab, self.n_vocab)
            except ValueError as exc:
                self._in_flight -= 1
                handle.sink(Event(error=str(exc)))
                continue
            seq_id = self._free_ids.pop(0)
            self._active.append(_Seq(handle=handle, seq_id=seq_id, sampler=sampler,
                                     greedy_penalty=greedy_repeat_penalty(handle.request.sampling),
                                     pending=list(handle.request.prompt_tokens),
                                     text=TextStream(handle.request.stop)))

    def _step(self) -> None:
        """One decode of one batch for every active sequence, then sampling, then the events."""
        batch = self._batch
        tokens_at, pos_at, seq_at, logits_at = self._rows
        n = 0
        outputs: list[tuple[_Seq, int]] = []

        def add(seq: _Seq, tokens: list[int], want_logits: bool) -> None:
            nonlocal n
            pos, seq_id = seq.pos, seq.seq_id
            for token in tokens:
                tokens_at[n] = token
                pos_at[n] = pos
                seq_at[n][0] = seq_id
                logits_at[n] = 0
                pos += 1
                n += 1
            seq.pos = pos
            if want_logits:
                logits_at[n - 1] = 1
                outputs.append((seq, n - 1))

        # Generating sequences first: one token each, so a long prompt never stalls them.
        for seq in self._active:
            if not seq.prefilling:
                add(seq, seq.pending, True)
                seq.pending = []
        budget = min(self.n_batch - n, self.prefill_chunk)
        for seq in self._active:
            if seq.prefilling and budget > 0:
                take = seq.pending[:budget]
                del seq.pending[:budget]
                budget -= len(take)
                done = not seq.pending
                add(seq, take, done)
                seq.prefilling = not done
        if n == 0:
            return
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, batch)
        self.steps += 1
        self._progress_at = time.monotonic()
        if rc != 0:
            with self._cond:
                for seq, _ in outputs:
                    self._finish(seq, error=f"llama_decode failed (code {rc})")
            return
        events: list[tuple[Sink, Event]] = []
        finished: list[tuple[_Seq, str]] = []
        sampled = 0
        for seq, idx in outputs:
            if seq.greedy_penalty is not None:
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, idx), (self.n_vocab,))
                token = greedy_token(row, seq.generated, seq.greedy_penalty,
                                     seq.handle.request.sampling.penalty_last_n)
            else:
                token = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, idx)
            had = len(seq.generated)
            reason = self._on_token(seq, token, events)
            sampled += len(seq.generated) - had
            if reason is not None:
                finished.append((seq, reason))
        if sampled:
            self.hooks.tokens(sampled)  # one metric update per step, not per token
        # Every event of the step in one burst: the first one wakes the consumers' event loop, the
        # rest land before it gets the GIL, so it takes them all in one go (see ``AsyncSink``).
        for sink, event in events:
            sink(event)
        if finished:
            with self._cond:
                for seq, reason in finished:
                    self._finish(seq, reason=reason)

    def _on_token(self, seq: _Seq, token: int, events: list[tuple[Sink, Event]]) -> str | None:
        """Record a sampled token, queue its text; returns a finish reason when the sequence is done."""
        if not seq.generated:
            self.hooks.first_token(time.perf_counter() - seq.handle.submitted)
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            return "stop"
        seq.generated.append(token)
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_piece(self.vocab, token)
        text, stopped = seq.text.push(piece)
        if text:
            events.append((seq.handle.sink, Event(text=text, tokens=[token])))
        if stopped:
            return "stop"
        if len(seq.generated) >= seq.handle.request.max_tokens or seq.pos + 1 >= self.n_ctx:
            return "length"  # a sequence never holds more than n_ctx cells of the shared cache
        seq.pending = [token]
        return None

    def _finish(self, seq: _Seq, *, reason: str | None = None, error: str | None = None) -> None:
        """Tell the request how it ended and free its slot (caller holds the lock)."""
        if seq not in self._active:
            return
        rest = "" if error else seq.text.finish()
        self._release(seq)  # before telling the caller, so a finished request never holds a slot
        seq.handle.sink(Event(text=rest, finish_reason=reason, error=error,
                              completion_tokens=len(seq.generated)))

    def _release(self, seq: _Seq) -> None:
        self._active.remove(seq)
        llama_cpp.llama_memory_seq_rm(self._mem, seq.seq_id, -1, -1)
        free_sampler(seq.sampler)
        self._free_ids.append(seq.seq_id)
        self._in_flight -= 1

    def _fail_all(self, message: str) -> None:
        with self._cond:
            for seq in list(self._active):
                self._finish(seq, error=message)
            while self._waiting:
                self._in_flight -= 1
                self._waiting.popleft().sink(Event(error=message))


def _free_all(samplers: list | None) -> None:
    for chain in samplers or ():
        free_sampler(chain)


__all__ = ["AsyncSink", "Engine", "EngineError", "EngineHooks", "EngineOverloaded", "EngineStopped",
           "Event", "GenerationRequest", "Handle", "MAX_TOP_LOGPROBS", "TokenLogprob"]

"""Continuous batching over llama-cpp-python's low-level API (no HTTP here).

One engine thread owns a ``llama_context`` created with ``n_seq_max = slots`` (a unified KV cache by
default; one KV stream per sequence with ``batch_invariant``).
Each step is one ``llama_decode`` of a single batch holding the next token of every generating
sequence plus a chunk of the prompt of sequences still being prefilled; then every sequence whose
logits came out samples with its own sampler chain (greedy requests, temperature 0 with at most a
repeat penalty, take the arg-max of their logits row in numpy instead: the same token, without
copying the 262k-entry vocabulary into a candidate array). Requests reach the thread through a
bounded waiting list; results go back through a per-request ``sink`` callable (``AsyncSink`` for
asyncio), all of a step's events together after its sampling, so an asyncio consumer is woken once
per step rather than once per token.

Prefix reuse (``kv_slots``): a finished sequence's cells stay in its slot as a cached prefix until
the slot is needed; a new prompt starts from the longest prefix any slot holds (shared cells in the
unified cache), and a prompt that shares a prefix with one still being prefilled waits for those
cells instead of computing them again (``_Seq.follow``), so concurrent requests behind one system
prompt prefill it once. ``n`` choices of one request share the prompt's cells and its last logits
row. Sequences never see each other's cells: a cell is shared only by sequences with the same
tokens up to it.

A failed ``llama_decode`` rewinds every sequence of the step to where it was before it (its cells
past that position removed, llama.cpp's and ours); when llama.cpp found no room for the batch and
the cache held cells, the cache is emptied and the step tried once more, otherwise every sequence
of the step ends with the error.

Sampler chains (grammars: up to 64 KiB to parse) are built by the caller or by the engine thread
outside the lock that ``submit`` and ``cancel`` take from the event loop.

Liveness: every decode step stamps the time; ``liveness()`` names what is wrong when the thread has
died or no step came for ``stall_s`` while requests are in flight (the service's ``/health`` fails
on it and the supervisor restarts the process), and ``submit`` refuses at once instead of queueing
a request that could never finish.
"""

from __future__ import annotations

import asyncio
import dataclasses
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

from suite.inference.kv_slots import REUSE_MIN, KvSlots, Slot
from suite.inference.prefix_tree import common_prefix
from suite.inference.sampling import (
    SamplingParams,
    build_sampler,
    free_sampler,
    greedy_repeat_penalty,
    greedy_token,
    token_piece,
)
from suite.inference.textstream import TextStream
from suite.inference.threads import ThreadGovernor

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
    """A submitted request; ``cancel()`` frees its slots at the engine's next step."""

    def __init__(self, engine: Engine, request: GenerationRequest, sink: Sink) -> None:
        self.engine = engine
        self.request = request
        self.sink = sink
        self.submitted = time.perf_counter()
        self.cancelled = False
        self.open = request.n  # choices without their final event yet

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


@dataclass(eq=False)
class _Seq:
    """One choice of one request, from placement to its final event (engine thread only)."""

    handle: Handle
    index: int
    sampler: object
    text: TextStream
    greedy_penalty: float | None = None  # set: sampled by ``sampling.greedy_token`` with this penalty
    slot: Slot | None = None  # None: not placed yet (following another sequence, or a choice > 0)
    pending: list[int] = field(default_factory=list)  # tokens for the next decode
    pos: int = 0  # cells this sequence holds (positions 0..pos-1)
    generated: list[int] = field(default_factory=list)
    prefilling: bool = True
    follow: tuple[_Seq, int] | None = None  # waits until that sequence holds this many cells of its prompt
    choices: list[_Seq] = field(default_factory=list)  # choice 0: the others, waiting for the prompt's logits
    unsent: list[int] = field(default_factory=list)  # tokens not in an event yet
    unsent_logprobs: list[TokenLogprob] = field(default_factory=list)
    done: bool = False

    @property
    def prompt(self) -> list[int]:
        return self.handle.request.prompt_tokens


@dataclass
class _Touched:
    """A sequence of the step being decoded, and where it was before (for a rewind)."""

    seq: _Seq
    pos: int
    pending: list[int]
    prefilling: bool
    tokens: list[int]


@dataclass
class _Fill:
    """The batch one step is filling: rows used, the sequences touched, the rows whose logits are read."""

    n: int = 0
    touched: list[_Touched] = field(default_factory=list)
    outputs: list[tuple[_Seq, int]] = field(default_factory=list)


class Engine:
    """N slots over one llama.cpp context; thread-safe ``submit`` / ``cancel`` from any thread."""

    def __init__(self, llama: llama_cpp.Llama, *, slots: int, queue_limit: int, n_ctx: int,
                 n_batch: int = 512, prefill_chunk: int = 256, batch_invariant: bool = False,
                 hooks: EngineHooks | None = None, stall_s: float = 30.0,
                 prefix_cache_tokens: int | None = None, adaptive_threads: bool = False) -> None:
        self.llama = llama
        self.batch_invariant = batch_invariant
        self.slots = slots
        self.queue_limit = queue_limit
        self.n_ctx = n_ctx
        self.n_batch = max(n_batch, slots)
        self.prefill_chunk = max(1, prefill_chunk)
        self.prefix_cache_tokens = prefix_cache_tokens  # None: the idle slots' cells; 0: no reuse
        self.adaptive_threads = adaptive_threads  # halve the decode threads while the box is busy (threads.py)
        self.governor: ThreadGovernor | None = None
        self.hooks = hooks or EngineHooks()
        self.vocab = llama._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self._cond = threading.Condition()
        self._waiting: deque[Handle] = deque()
        self._in_flight = 0  # requests submitted and not answered
        self._reserved = 0  # slots promised to admitted requests
        self._seqs: list[_Seq] = []  # engine thread only
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._ctx = None
        self._batch = None
        self.kv: KvSlots | None = None
        self._pieces: dict[int, bytes] = {}
        self._own_model = None
        self._retried = False  # the last step failed for room and was retried with an empty cache
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
        # The window layers' cache as large as the others' (llama-cpp-python's default too): a
        # cached prefix keeps its window cells, and the slots' cells always fit (kv_slots).
        params.swa_full = True
        with suppress_stdout_stderr(disable=self.llama.verbose):
            self._ctx = llama_cpp.llama_init_from_model(model, params)
        if not self._ctx:
            raise EngineError("llama.cpp could not create the batched context")
        cache = self.prefix_cache_tokens
        if llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model):
            cache = 0  # a recurrent state cannot be cut back to a prefix
        self.kv = KvSlots(self._ctx, self.slots, share=not self.batch_invariant,
                          n_swa=llama_cpp.llama_model_n_swa(model), cache_cells=cache)
        if self.adaptive_threads:
            ctx = self._ctx
            self.governor = ThreadGovernor(params.n_threads, lambda n: llama_cpp.llama_set_n_threads(ctx, n, n))
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
        """Slots held by admitted requests right now."""
        return self._reserved

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiting)

    def threads_info(self) -> dict[str, int] | None:
        """Decode threads now, configured, and how often the governor changed them (None: fixed)."""
        g = self.governor
        return None if g is None else {"now": g.current, "configured": g.full, "changes": g.changes}

    def cache_info(self) -> dict[str, int | bool]:
        """The prefix cache's counters and how many KV cells are held (for /metrics and /health)."""
        kv = self.kv
        if kv is None:
            return {}
        return {"enabled": kv.enabled, **dataclasses.asdict(kv.stats), "cells_used": kv.tree.cells,
                "cells_cached": kv.tree.cached}

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
                    cancelled = self._take_cancelled()
                    admitted = self._take_admissions()
                    if self._stopping:
                        break
                    if not self._seqs and not admitted and not cancelled:
                        self._cond.wait()
                        continue
                for seq in cancelled:
                    self._close(seq)
                for handle in admitted:  # sampler chains are built here, outside the lock
                    self._start(handle)
                self._step()
        except Exception as exc:  # an engine that dies must not leave requests hanging
            log.exception("inference engine failed")
            self._failed = f"inference engine failed: {type(exc).__name__}: {exc}"
            self._fail_all(self._failed)
            return
        self._fail_all("inference engine stopped")

    def _take_cancelled(self) -> list[_Seq]:
        """(lock held) Drop cancelled requests from the waiting list; the running ones' sequences."""
        for handle in [h for h in self._waiting if h.cancelled]:
            self._waiting.remove(handle)
            self._in_flight -= 1
            _free_all(handle.request.samplers)
            handle.request.samplers = None
        return [s for s in self._seqs if s.handle.cancelled and not s.done]

    def _take_admissions(self) -> list[Handle]:
        """(lock held) The waiting requests that now have slots for all their choices, in order."""
        out = []
        while self._waiting and not self._stopping and self._reserved + self._waiting[0].request.n <= self.slots:
            handle = self._waiting.popleft()
            self._reserved += handle.request.n
            out.append(handle)
        return out

    def _start(self, handle: Handle) -> None:
        """Sampler chains for an admitted request (built here unless the caller did), then its
        first choice's place in the cache; the others wait for its prompt's logits."""
        request = handle.request
        chains, request.samplers = request.samplers, None
        if chains is None:
            chains = []
            try:
                for i in range(request.n):
                    chains.append(build_sampler(_choice_sampling(request.sampling, i), self.vocab, self.n_vocab))
            except ValueError as exc:
                _free_all(chains)
                with self._cond:
                    self._reserved -= request.n
                    self._in_flight -= 1
                for i in range(request.n):
                    handle.sink(Event(error=str(exc), index=i))
                return
        penalty = greedy_repeat_penalty(request.sampling)
        seqs = [_Seq(handle, i, chain, TextStream(request.stop), penalty) for i, chain in enumerate(chains)]
        seqs[0].choices = seqs[1:]
        self._seqs.extend(seqs)
        self._place(seqs[0])

    def _place(self, seq: _Seq) -> None:
        """Start ``seq`` from the longest cached prefix of its prompt, or let it follow a sequence
        that is prefilling a longer one."""
        prompt = seq.prompt
        leader = self._leader_for(prompt)
        if leader is not None:
            seq.follow = leader
            return
        seq.slot, seq.pos = self.kv.place(prompt)
        seq.pending = prompt[seq.pos:]
        seq.prefilling = True

    def _leader_for(self, prompt: list[int]) -> tuple[_Seq, int] | None:
        """A sequence being prefilled whose prompt shares at least REUSE_MIN more tokens with
        ``prompt`` than the cache holds now, and how many cells to wait for."""
        if not self.kv.enabled:
            return None
        now = self.kv.match(prompt)
        best: tuple[_Seq, int] | None = None
        for other in self._seqs:
            if other.slot is None or not other.prefilling or other.done:
                continue
            c = common_prefix(other.prompt, prompt, 0, len(prompt) - 1)
            if c >= now + REUSE_MIN and other.pos < c and (best is None or c > best[1]):
                best = (other, c)
        return best

    def _unpark(self) -> None:
        """Place the sequences whose leader now holds the cells they wait for (or ended)."""
        for seq in self._seqs:
            if seq.follow is None:
                continue
            leader, wanted = seq.follow
            if leader.done or leader.pos >= wanted or not leader.prefilling:
                seq.follow = None
                self._place(seq)

    def _step(self) -> None:
        """One step: fill the batch, decode it, sample every sequence that asked for logits."""
        self._unpark()
        fill = self._fill()
        if fill.n == 0:
            return
        if self._decode(fill):
            self._sample_outputs(fill.outputs)

    def _fill(self) -> _Fill:
        """The step's batch: generating sequences first, one token each, so a long prompt never stalls
        them; then prompt chunks up to ``prefill_chunk`` tokens in all."""
        fill = _Fill()
        for seq in self._seqs:
            if seq.slot is not None and not seq.prefilling:
                self._add(fill, seq, seq.pending, [], True)
        budget = min(self.n_batch - fill.n, self.prefill_chunk)
        for seq in self._seqs:
            if seq.slot is not None and seq.prefilling and budget > 0:
                take = seq.pending[:budget]
                budget -= len(take)
                done = len(take) == len(seq.pending)
                self._add(fill, seq, take, seq.pending[len(take):], done)
                seq.prefilling = not done
        return fill

    def _add(self, fill: _Fill, seq: _Seq, tokens: list[int], rest: list[int], want_logits: bool) -> None:
        """Put ``tokens`` of ``seq`` into the batch rows (logits on the last when ``want_logits``)."""
        tokens_at, pos_at, seq_at, logits_at = self._rows
        fill.touched.append(_Touched(seq, seq.pos, seq.pending, seq.prefilling, tokens))
        n, pos, seq_id = fill.n, seq.pos, seq.slot.seq_id
        for token in tokens:
            tokens_at[n] = token
            pos_at[n] = pos
            seq_at[n][0] = seq_id
            logits_at[n] = 0
            pos += 1
            n += 1
        fill.n, seq.pos, seq.pending = n, pos, rest
        if want_logits:
            logits_at[n - 1] = 1
            fill.outputs.append((seq, n - 1))

    def _decode(self, fill: _Fill) -> bool:
        """``llama_decode`` of the filled batch; False (every sequence rewound) when it failed."""
        for t in fill.touched:
            self.kv.before_decode(t.seq.slot)
        self._batch.n_tokens = fill.n
        governor = self.governor
        if governor is not None:
            governor.begin()
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if governor is not None:
            governor.end()
        self.steps += 1
        self._progress_at = time.monotonic()
        if rc != 0:
            self._decode_failed(rc, fill.touched)
            return False
        self._retried = False
        prefilled = 0
        for t in fill.touched:
            self.kv.grew(t.seq.slot, t.tokens)
            if t.prefilling:
                prefilled += len(t.tokens)
        self.kv.stats.tokens_prefilled += prefilled
        return True

    def _sample_outputs(self, outputs: list[tuple[_Seq, int]]) -> None:
        """Sample a token for every sequence with logits in this step, then send the step's events."""
        events: list[tuple[Sink, Event]] = []
        finished: list[tuple[_Seq, str]] = []
        sampled = 0
        for seq, idx in outputs:
            group = [seq]
            if seq.choices:  # the prompt's last logits: the other choices start from here too
                for other in seq.choices:
                    other.slot = self.kv.copy(seq.slot, seq.pos)
                    other.pos, other.prefilling = seq.pos, False
                group += seq.choices
                seq.choices = []
            for member in group:
                token = self._sample(member, idx)
                had = len(member.generated)
                reason = self._on_token(member, token, idx, events)
                if member.handle.request.metered:
                    sampled += len(member.generated) - had
                if reason is not None:
                    finished.append((member, reason))
        if sampled:
            self.hooks.tokens(sampled)  # one metric update per step, not per token
        # Every event of the step in one burst: the first one wakes the consumers' event loop, the
        # rest land before it gets the GIL, so it takes them all in one go (see ``AsyncSink``).
        for sink, event in events:
            sink(event)
        for seq, reason in finished:
            self._finish(seq, reason=reason)

    def _decode_failed(self, rc: int, touched: list[_Touched]) -> None:
        """Rewind every sequence of the failed step; retry once with an emptied cache when
        llama.cpp found no room (rc 1), else end each of them with the error."""
        for t in touched:
            self.kv.rewind(t.seq.slot, t.pos)
            t.seq.pos, t.seq.pending, t.seq.prefilling = t.pos, t.pending, t.prefilling
        if rc == 1 and not self._retried and self.kv.evict_cached():
            self._retried = True
            log.warning("llama_decode found no room for %d sequences; cached prefixes dropped, retrying",
                        len(touched))
            return
        self._retried = False
        error = f"llama_decode failed (code {rc})"
        log.error("%s; ending the %d sequence(s) of the step", error, len(touched))
        for t in touched:
            for waiting in t.seq.choices:  # choices that would have started from its prompt
                self._finish(waiting, error=error)
            self._finish(t.seq, error=error)

    def _sample(self, seq: _Seq, idx: int) -> int:
        if seq.greedy_penalty is not None:
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, idx), (self.n_vocab,))
            return greedy_token(row, seq.generated, seq.greedy_penalty, seq.handle.request.sampling.penalty_last_n)
        return llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, idx)

    def _on_token(self, seq: _Seq, token: int, idx: int, events: list[tuple[Sink, Event]]) -> str | None:
        """Record a sampled token, queue its text; returns a finish reason when the sequence is done."""
        request = seq.handle.request
        if not seq.generated and request.metered:
            self.hooks.first_token(time.perf_counter() - seq.handle.submitted)
        if llama_cpp.llama_vocab_is_eog(self.vocab, token):
            return "stop"
        seq.generated.append(token)
        seq.unsent.append(token)
        if request.logprobs is not None:
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, idx), (self.n_vocab,))
            seq.unsent_logprobs.append(token_logprob(row, token, request.logprobs))
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_piece(self.vocab, token)
        text, stopped = seq.text.push(piece)
        if text:
            events.append((seq.handle.sink, self._event(seq, text=text)))
        if stopped:
            return "stop"
        if len(seq.generated) >= request.max_tokens or seq.pos + 1 >= self.n_ctx:
            return "length"  # a sequence never holds more than n_ctx cells of the shared cache
        seq.pending = [token]
        return None

    def _event(self, seq: _Seq, **fields) -> Event:
        """An event of ``seq`` carrying the tokens (and their logprobs) not sent yet."""
        event = Event(tokens=seq.unsent, index=seq.index,
                      logprobs=seq.unsent_logprobs if seq.handle.request.logprobs is not None else None, **fields)
        seq.unsent, seq.unsent_logprobs = [], []
        return event

    def _finish(self, seq: _Seq, *, reason: str | None = None, error: str | None = None) -> None:
        """Tell the choice how it ended, after freeing its slot (a finished request never holds one)."""
        if seq.done:
            return
        rest = "" if error else seq.text.finish()
        self._close(seq, keep=error is None)
        seq.handle.sink(self._event(seq, text=rest, finish_reason=reason, error=error,
                                    completion_tokens=len(seq.generated)))

    def _close(self, seq: _Seq, keep: bool = True) -> None:
        """End ``seq``: its cells stay cached (``keep``) or go, its sampler is freed, its slot and,
        with its request's last choice, its place in flight are given back."""
        seq.done = True
        self._seqs.remove(seq)
        if seq.slot is not None:
            self.kv.release(seq.slot, keep)
            seq.slot = None
        free_sampler(seq.sampler)
        seq.sampler = None
        seq.handle.open -= 1
        with self._cond:
            self._reserved -= 1
            if seq.handle.open == 0:
                self._in_flight -= 1

    def _fail_all(self, message: str) -> None:
        for seq in list(self._seqs):
            self._finish(seq, error=message)
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
            self._in_flight -= len(waiting)
        for handle in waiting:
            _free_all(handle.request.samplers)
            handle.request.samplers = None
            for i in range(handle.request.n):
                handle.sink(Event(error=message, index=i))


def token_logprob(row: np.ndarray, token: int, k: int) -> TokenLogprob:
    """``token``'s log-probability under the logits ``row`` (log-softmax) and the ``k`` most likely
    tokens, most likely first (ties: lower token id first). ~1 ms per row of Gemma's 262k."""
    top = float(row.max())
    lse = top + float(np.log(np.exp(row - top, dtype=np.float32).sum(dtype=np.float64)))
    best: list[tuple[int, float]] = []
    if k:
        part = np.argpartition(row, -k)[-k:]
        order = part[np.lexsort((part, -row[part]))]
        best = [(int(t), float(row[t]) - lse) for t in order]
    return TokenLogprob(token=int(token), logprob=float(row[token]) - lse, top=best)


def _choice_sampling(sampling: SamplingParams, index: int) -> SamplingParams:
    """Choice ``index``'s sampling: the request's, with its own seed (the same seed would give the
    same text at any temperature)."""
    return sampling if index == 0 else dataclasses.replace(sampling, seed=(sampling.seed + index) & 0xFFFFFFFF)


def _free_all(samplers: list | None) -> None:
    for chain in samplers or ():
        free_sampler(chain)


__all__ = ["AsyncSink", "Engine", "EngineError", "EngineHooks", "EngineOverloaded", "EngineStopped",
           "Event", "GenerationRequest", "Handle", "MAX_TOP_LOGPROBS", "TokenLogprob", "token_logprob"]

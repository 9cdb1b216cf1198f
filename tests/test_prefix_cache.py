"""Prefix reuse in the batched engine, against the real Gemma model: parity, sharing, limits, faults.

Parity: with ``batch_invariant`` (one KV stream per sequence, plain weights) a reused prefix gives
the tokens a fresh prefill gives, bit for bit. In the default unified cache a token's attention sums
run over cells wherever they sit in the one buffer, so cached or concurrent neighbours can move the
logits in their last bits (as concurrency already did): there the check is that the reused answer's
first token and its log-probability agree with the fresh one's.
"""

from __future__ import annotations

import threading
import time

import llama_cpp
import pytest

from suite.inference import engine as engine_module
from suite.inference import kv_slots
from suite.inference.engine import Engine, GenerationRequest
from suite.inference.openai_surface import completion_prompt_tokens
from suite.inference.sampling import SamplingParams
from tests.test_engine import Collector

N_CTX = 1024
SYSTEM = ("You are the operations assistant of a small team. Answer in one short sentence, name the rule "
          "you used, and never invent numbers or hosts. ") * 4
QUESTIONS = ["Question: What is a health check?\nAnswer:", "Question: Why do requests time out?\nAnswer:",
             "Question: What does a load balancer do?\nAnswer:", "Question: How do I read a log file?\nAnswer:"]
RULES = "".join(f"Rule {i}: every service answers its health check within one second and logs the result. "
                for i in range(40))  # ~750 tokens: longer than Gemma 3's 512-token sliding window


@pytest.fixture(scope="module")
def llama(gemma_path):
    llm = llama_cpp.Llama(str(gemma_path), n_ctx=512, n_threads=2, n_threads_batch=2, seed=4242, verbose=False)
    yield llm
    llm.close()


class Answer(Collector):
    """A Collector that also keeps the log-probabilities of the tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.logprobs: list = []

    def __call__(self, event) -> None:
        self.logprobs.extend(event.logprobs or [])
        super().__call__(event)


def engine_for(llama, **kw) -> Engine:
    kw.setdefault("slots", 4)
    kw.setdefault("queue_limit", 8)
    engine = Engine(llama, n_ctx=N_CTX, **kw)
    engine.start()
    return engine


def ask(engine: Engine, llama, prompts: list[str], max_tokens: int = 12, logprobs: int | None = None,
        stagger_s: float = 0.0) -> list[Answer]:
    """Submit every prompt (greedy), wait for all; each Answer has the tokens and the final event."""
    sinks = []
    for p in prompts:
        sinks.append(Answer())
        engine.submit(GenerationRequest(completion_prompt_tokens(llama, p), max_tokens, [],
                                        SamplingParams(temperature=0.0), logprobs=logprobs), sinks[-1])
        time.sleep(stagger_s)
    for sink in sinks:
        sink.text, sink.final = sink.result()
    return sinks


def fresh_answers(llama, prompts: list[str], **kw) -> list[list[int]]:
    """Each prompt alone on an engine with reuse off: the reference tokens."""
    engine = engine_for(llama, prefix_cache_tokens=0, **kw)
    try:
        return [ask(engine, llama, [p])[0].tokens for p in prompts]
    finally:
        engine.stop()


def delta(engine: Engine, before: dict, key: str) -> int:
    return engine.cache_info()[key] - before[key]


@pytest.mark.integration
def test_reuse_is_bit_exact_with_batch_invariant(llama):
    prompts = [SYSTEM + q for q in QUESTIONS]
    want = fresh_answers(llama, prompts, batch_invariant=True)
    engine = engine_for(llama, batch_invariant=True)
    try:
        first = ask(engine, llama, prompts[:1])[0]
        assert first.tokens == want[0]
        before = engine.cache_info()
        for p, tokens in zip(prompts[1:], want[1:]):  # each starts from the cached system prompt
            assert ask(engine, llama, [p])[0].tokens == tokens, p
        system = len(completion_prompt_tokens(llama, SYSTEM)) - 1
        assert delta(engine, before, "hits") == 3 and delta(engine, before, "tokens_reused") >= 3 * system
        # the next turn of a conversation: the whole previous prompt and answer come from the cache
        turn = prompts[0] + first.text + "\nQuestion: And why does it matter?\nAnswer:"
        before = engine.cache_info()
        assert ask(engine, llama, [turn])[0].tokens == fresh_answers(llama, [turn], batch_invariant=True)[0]
        assert delta(engine, before, "tokens_reused") >= len(completion_prompt_tokens(llama, prompts[0])) + 8
        assert engine.kv.mismatches() == []
    finally:
        engine.stop()


@pytest.mark.parametrize("invariant", [False, True])
@pytest.mark.integration
def test_concurrent_prompts_behind_one_prefix_prefill_it_once(llama, invariant):
    prompts = [SYSTEM + q for q in QUESTIONS]
    want = fresh_answers(llama, prompts, batch_invariant=invariant)
    engine = engine_for(llama, batch_invariant=invariant, prefill_chunk=64)
    try:
        got = ask(engine, llama, prompts)  # all four at once: one prefills the system prompt, three follow
        info = engine.cache_info()
        lengths = [len(completion_prompt_tokens(llama, p)) for p in prompts]
        system = len(completion_prompt_tokens(llama, SYSTEM)) - 1
        assert info["tokens_prefilled"] + info["tokens_reused"] == sum(lengths)
        assert info["tokens_prefilled"] <= sum(lengths) - 3 * system  # the system prompt once, not four times
        assert info["hits"] == 3
        for sink, tokens in zip(got, want):
            assert sink.final.error is None
            if invariant:
                assert sink.tokens == tokens
            else:  # the unified buffer: the same first token (the last bits of the logits may move)
                assert sink.tokens[:1] == tokens[:1]
        if not invariant:  # shared cells are held once: far fewer than four copies of the system prompt
            assert info["cells_used"] < sum(lengths) + 4 * 12 - 2 * system
        assert engine.kv.mismatches() == [] and engine.active == 0
    finally:
        engine.stop()


@pytest.mark.integration
def test_reuse_in_the_unified_cache_reads_the_right_cells(llama):
    """A cached prefix continued by a new question: its first token and log-probability are the fresh
    prefill's, up to what the repacked kernels' batch dependence moves anyway (the same prompt
    prefilled fresh in chunks of 7 instead of 256 moves this log-probability by 0.065; a wrong or
    missing cell moves it by whole units), and nothing of the cached answer leaks."""
    loud = SYSTEM + "Question: Repeat the word zebra.\nAnswer: zebra zebra zebra zebra zebra"
    prompts = [SYSTEM + q for q in QUESTIONS[:2]]
    engine_off = engine_for(llama, prefix_cache_tokens=0)
    try:
        want = [ask(engine_off, llama, [p], logprobs=1)[0] for p in prompts]
    finally:
        engine_off.stop()
    engine = engine_for(llama)
    try:
        ask(engine, llama, [loud], max_tokens=8)
        before = engine.cache_info()
        got = [ask(engine, llama, [p], logprobs=1)[0] for p in prompts]
        assert delta(engine, before, "hits") == 2
        for g, w in zip(got, want):
            assert g.tokens[0] == w.tokens[0]
            assert g.logprobs[0].logprob == pytest.approx(w.logprobs[0].logprob, abs=0.15)
            assert "zebra" not in g.text.lower()
    finally:
        engine.stop()


@pytest.mark.parametrize("pins", [True, False])
@pytest.mark.integration
def test_sliding_window_cells_stay_for_a_longer_prefix(llama, monkeypatch, pins):
    """Gemma 3's window layers: llama.cpp reuses a cell once it slid out of its only sequence's
    window. Without the engine's pins a cached 750-token prompt loses its early window cells when
    new cells land on them (``pos_min`` rises) and a 600-token branch of it cannot be continued: the
    engine sees that and prefills instead; with the pins the cells stay and the branch is reused."""
    if not pins:
        init = kv_slots.KvSlots.__init__

        def without_pins(self, *args, **kw):
            init(self, *args, **kw)
            for slot in self.slots:
                slot.pin = None
        monkeypatch.setattr(kv_slots.KvSlots, "__init__", without_pins)
    engine = engine_for(llama, slots=2, prefill_chunk=512)
    try:
        assert llama_cpp.llama_model_n_swa(llama.model) == 512
        ask(engine, llama, ["A short request about apples and pears, nothing more to say here."], max_tokens=2)
        ask(engine, llama, [RULES], max_tokens=2)  # slot 1: 750 tokens, its first ~240 out of the window
        ask(engine, llama, ["Something else: " + "the quick brown fox jumps over the lazy dog. " * 20],
            max_tokens=2)  # slot 0 again: its new cells fill the start of the buffer, then the next ones
        low = llama_cpp.llama_memory_seq_pos_min(engine.kv.mem, engine.kv.slots[1].seq_id)
        branch = RULES[:len(RULES) * 4 // 5] + " and then a different ending"
        before = engine.cache_info()
        sink = ask(engine, llama, [branch], max_tokens=4)[0]
        reused = delta(engine, before, "tokens_reused")
        assert sink.final.error is None and sink.final.completion_tokens == 4
        if pins:
            assert low == 0 and reused >= 550
        else:
            assert low > 0 and reused == 0  # refused by swa_ok, not continued over missing cells
        assert engine.kv.mismatches() == []
    finally:
        engine.stop()


@pytest.mark.integration
def test_a_failed_decode_rewinds_or_ends_every_sequence_it_touched(llama, monkeypatch):
    """Injected: llama_decode writes the batch's cells and then reports failure. Every sequence of the
    step ends with the error and holds no cell; a request following one of them prefills on its own;
    afterwards llama.cpp's memory and the engine's agree and answers are the fresh ones."""
    prompts = [SYSTEM + QUESTIONS[0], "The capital of France is", SYSTEM + QUESTIONS[1]]
    want = fresh_answers(llama, prompts, batch_invariant=True)
    engine = engine_for(llama, batch_invariant=True, prefill_chunk=16)
    real = llama_cpp.llama_decode
    failed = threading.Event()

    def decode(ctx, batch):
        rc = real(ctx, batch)
        seqs = engine._seqs
        mid_prefill = any(s.slot is not None and s.prefilling for s in seqs)
        generating = any(s.slot is not None and s.generated for s in seqs)
        if not failed.is_set() and mid_prefill and generating:
            failed.set()
            return -3  # what llama.cpp answers when the graph failed (its cells may be half written)
        return rc

    monkeypatch.setattr(llama_cpp, "llama_decode", decode)
    try:
        sinks = [Collector() for _ in prompts]
        engine.submit(GenerationRequest(completion_prompt_tokens(llama, prompts[1]), 400, [],
                                        SamplingParams(temperature=0.0)), sinks[1])
        time.sleep(0.5)  # generating by now
        for i in (0, 2):  # a long prompt in 16-token chunks, and one that follows it
            engine.submit(GenerationRequest(completion_prompt_tokens(llama, prompts[i]), 12, [],
                                            SamplingParams(temperature=0.0)), sinks[i])
        results = [s.result() for s in sinks]
        assert failed.is_set()
        assert "llama_decode failed (code -3)" in (results[0][1].error or "")
        assert "llama_decode failed (code -3)" in (results[1][1].error or "")
        assert results[2][1].error is None and sinks[2].tokens == want[2]  # the follower went on alone
        assert engine.kv.mismatches() == [] and engine.active == 0
        assert [ask(engine, llama, [p])[0].tokens for p in prompts] == want
    finally:
        engine.stop()


@pytest.mark.integration
def test_no_room_for_a_step_empties_the_cache_and_retries(llama, monkeypatch):
    """Injected: llama_decode writes the cells and answers 1 (no memory slot) once while the cache
    holds prefixes. The engine rewinds every sequence of the step, drops the cached prefixes and
    tries again: the answers are the fresh ones, nothing ends with an error."""
    prompts = [SYSTEM + QUESTIONS[2], "The capital of France is"]
    want = fresh_answers(llama, prompts, batch_invariant=True)
    engine = engine_for(llama, batch_invariant=True)
    real = llama_cpp.llama_decode
    calls = []

    def decode(ctx, batch):
        rc = real(ctx, batch)
        calls.append(rc)
        return 1 if len(calls) == 3 else rc

    try:
        ask(engine, llama, [SYSTEM + QUESTIONS[3], "An unrelated cached prompt, long enough to keep: " * 3])
        assert engine.cache_info()["cells_cached"] > 0
        monkeypatch.setattr(llama_cpp, "llama_decode", decode)
        got = ask(engine, llama, prompts)
        assert len(calls) > 3 and [s.final.error for s in got] == [None, None]
        assert [s.tokens for s in got] == want
        assert engine.cache_info()["cells_evicted"] > 0 and engine.kv.mismatches() == []
    finally:
        engine.stop()


@pytest.mark.integration
def test_a_window_the_source_lost_is_not_continued(llama, monkeypatch):
    """When llama.cpp says a cached sequence no longer holds the window before the prefix's end
    (``llama_memory_seq_pos_min``), the prompt is prefilled from scratch: no hit, the fresh answer."""
    prompts = [SYSTEM + QUESTIONS[0], SYSTEM + QUESTIONS[1]]
    want = fresh_answers(llama, prompts[1:], batch_invariant=True)[0]
    engine = engine_for(llama, batch_invariant=True)
    try:
        ask(engine, llama, prompts[:1])
        monkeypatch.setattr(llama_cpp, "llama_memory_seq_pos_min", lambda mem, seq: 10**6)
        assert engine.kv.n_swa == 512
        before = engine.cache_info()
        assert ask(engine, llama, prompts[1:])[0].tokens == want
        assert delta(engine, before, "hits") == 0 and delta(engine, before, "tokens_reused") == 0
    finally:
        engine.stop()


@pytest.mark.parametrize("budget", [0, 40])
@pytest.mark.integration
def test_the_cache_stays_within_its_budget(llama, budget):
    engine = engine_for(llama, prefix_cache_tokens=budget)
    try:
        prompts = [SYSTEM + q for q in QUESTIONS[:2]]
        ask(engine, llama, prompts)
        ask(engine, llama, prompts)
        info = engine.cache_info()
        assert info["cells_cached"] <= budget and info["cells_used"] == info["cells_cached"]
        if budget == 0:
            assert info["hits"] == 0 and info["tokens_reused"] == 0 and info["cells_used"] == 0
    finally:
        engine.stop()


def test_sampler_chains_are_built_outside_the_lock(llama, monkeypatch):
    """A slow grammar parse on the engine thread never holds the lock submit and cancel take."""
    engine = engine_for(llama, slots=2)
    held = []
    real = engine_module.build_sampler

    def slow_build(*args):
        held.append(engine._cond._is_owned())
        time.sleep(0.5)
        return real(*args)

    monkeypatch.setattr(engine_module, "build_sampler", slow_build)
    try:
        first = Collector()
        engine.submit(GenerationRequest(completion_prompt_tokens(llama, QUESTIONS[0]), 4, [],
                                        SamplingParams(temperature=0.7)), first)
        time.sleep(0.2)  # the engine thread is inside the slow build now
        t = time.perf_counter()
        handle = engine.submit(GenerationRequest(completion_prompt_tokens(llama, QUESTIONS[1]), 4, [],
                                                 SamplingParams(temperature=0.7)), Collector())
        handle.cancel()
        assert time.perf_counter() - t < 0.1
        assert first.result()[1].completion_tokens == 4
        assert held and not any(held)
    finally:
        engine.stop()

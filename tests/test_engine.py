"""The batching engine against the real Gemma model: serial equality, isolation, limits, cleanup."""

from __future__ import annotations

import math
import queue
import threading
import time

import llama_cpp
import numpy as np
import pytest

from suite.inference.engine import (
    Engine,
    EngineHooks,
    EngineOverloaded,
    EngineStopped,
    Event,
    GenerationRequest,
)
from suite.inference.openai_surface import completion_prompt_tokens
from suite.inference.sampling import (
    SamplingParams,
    build_sampler,
    free_sampler,
    greedy_repeat_penalty,
    greedy_token,
)
from suite.inference.textstream import TextStream

PROMPTS = [
    "Question: What is a health check in software?\nAnswer:",
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time",
]
N_CTX = 512


@pytest.fixture(scope="module")
def llama(gemma_path):
    llm = llama_cpp.Llama(str(gemma_path), n_ctx=N_CTX, n_batch=512, n_threads=2, n_threads_batch=2,
                          seed=4242, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def serial(llama):
    """The serial path's greedy outputs (llama-cpp-python's own create_completion).

    ``reset()`` first: otherwise Llama reuses the previous prompt's cached prefix and evaluates the
    rest in a differently sized batch, which changes the numbers slightly (the serial path is only
    reproducible from a cold cache).
    """
    out = {}
    for p in PROMPTS:
        llama.reset()
        res = llama.create_completion(p, max_tokens=24, temperature=0.0, repeat_penalty=1.1, seed=7)
        out[p] = (res["choices"][0]["text"], res["usage"]["completion_tokens"])
    return out


def make_engine(llama, **kw) -> Engine:
    kw.setdefault("slots", 4)
    kw.setdefault("queue_limit", 4)
    engine = Engine(llama, n_ctx=N_CTX, **kw)
    engine.start()
    return engine


def request(llama, prompt: str, max_tokens: int = 24, **sampling) -> GenerationRequest:
    sampling.setdefault("temperature", 0.0)
    sampling.setdefault("repeat_penalty", 1.1)
    sampling.setdefault("seed", 7)
    return GenerationRequest(prompt_tokens=completion_prompt_tokens(llama, prompt), max_tokens=max_tokens,
                             stop=sampling.pop("stop", []), sampling=SamplingParams(**sampling))


class Collector:
    """A sync sink: all text and the final event of one request."""

    def __init__(self) -> None:
        self.q: queue.Queue[Event] = queue.Queue()
        self.tokens: list[int] = []

    def __call__(self, event: Event) -> None:
        self.tokens.extend(event.tokens)
        self.q.put(event)

    def result(self, timeout: float = 300) -> tuple[str, Event]:
        parts = []
        while True:
            event = self.q.get(timeout=timeout)
            parts.append(event.text)
            if event.final:
                return "".join(parts), event


def run_all(engine: Engine, requests: list[GenerationRequest], stagger_s: float = 0.0) -> list[tuple[str, Event]]:
    sinks = []
    for req in requests:
        sink = Collector()
        engine.submit(req, sink)
        sinks.append(sink)
        if stagger_s:
            time.sleep(stagger_s)  # let earlier sequences be mid-generation when later ones arrive
    return [s.result() for s in sinks]


@pytest.mark.integration
def test_single_sequence_equals_serial_path(llama, serial):
    """One sequence at a time on a cache with nothing else in it (prefix cache off): the serial path's
    tokens, bit for bit. (With cached cells elsewhere in the unified buffer the sums of the
    attention can add up in another order: see test_prefix_cache.py.)"""
    engine = make_engine(llama, slots=2, prefix_cache_tokens=0)
    try:
        for p in PROMPTS:
            (text, event), = run_all(engine, [request(llama, p)])
            assert (text, event.completion_tokens) == serial[p], p
            assert event.finish_reason == "length" and event.error is None
    finally:
        engine.stop()


@pytest.mark.parametrize("penalty", [1.0, 1.1, 1.5, 0.8])
def test_greedy_fast_path_picks_what_the_native_chain_picks(llama, penalty):
    """Step by step on the real model: arg-max after the repeat penalty == llama.cpp's sampler chain."""
    params = SamplingParams(temperature=0.0, repeat_penalty=penalty, penalty_last_n=16)
    assert greedy_repeat_penalty(params) == penalty
    assert greedy_repeat_penalty(SamplingParams(temperature=0.0, presence_penalty=0.5)) is None
    assert greedy_repeat_penalty(SamplingParams(temperature=0.7)) is None
    n_vocab = llama_cpp.llama_vocab_n_tokens(llama._model.vocab)
    chain = build_sampler(params, llama._model.vocab, n_vocab)
    llama.reset()
    llama.eval(completion_prompt_tokens(llama, PROMPTS[3]))
    generated: list[int] = []
    try:
        for _ in range(48):
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1), (n_vocab,))
            fast = greedy_token(row, generated, penalty, params.penalty_last_n)
            assert fast == llama_cpp.llama_sampler_sample(chain, llama._ctx.ctx, -1), generated
            generated.append(fast)
            llama.eval([fast])
    finally:
        free_sampler(chain)
        llama.reset()
    if penalty > 1.0:  # the penalty mattered: the text differs from plain greedy's
        assert len(set(generated)) > 8


@pytest.mark.integration
def test_interleaved_sequences_never_read_each_others_cache(llama):
    """Different prompts decoded together (and reusing freed slots) give their one-at-a-time results."""
    engine = make_engine(llama, slots=3, queue_limit=8, batch_invariant=True)
    try:
        alone = {p: run_all(engine, [request(llama, p)])[0][0] for p in PROMPTS}
        mixed = run_all(engine, [request(llama, p) for p in PROMPTS * 2], stagger_s=0.05)
        for p, (text, event) in zip(PROMPTS * 2, mixed):
            assert event.error is None
            assert text == alone[p], p
        assert engine.active == 0 and engine.waiting == 0
    finally:
        engine.stop()


@pytest.mark.integration
def test_shared_cache_keeps_sequences_apart(llama):
    """Default engine (one KV buffer for all slots): interleaved sequences see only their own cells.

    Their logits may move in the last bits with the KV length the batch gives the attention kernel
    (exact equality is ``batch_invariant``'s test above), so the check is what reading another
    sequence's cells would break: each answer starts as it does alone, and a loud neighbour (a
    prompt that is one word repeated) never leaks its word into the others.
    """
    engine = make_engine(llama, slots=3, queue_limit=8)
    loud = "The word is zebra. " * 10
    try:
        def run(prompts, stagger_s=0.0):
            sinks = []
            for p in prompts:
                sinks.append(Collector())
                engine.submit(request(llama, p, max_tokens=12), sinks[-1])
                time.sleep(stagger_s)
            return [(sink.result()[0], sink.tokens) for sink in sinks]

        alone = {p: run([p])[0] for p in PROMPTS}
        mixed = run([q for p in PROMPTS for q in (loud, p)], stagger_s=0.05)
        for prompt, (text, tokens) in zip([q for p in PROMPTS for q in (loud, p)], mixed):
            if prompt == loud:
                assert "zebra" in text
            else:
                assert tokens[:2] == alone[prompt][1][:2], prompt
                assert "zebra" not in text.lower(), prompt
        assert engine.active == 0 and engine.waiting == 0
    finally:
        engine.stop()


@pytest.mark.parametrize("exact", [{"prefix_cache_tokens": 0}, {"batch_invariant": True}],
                         ids=["cache-off", "batch-invariant"])
@pytest.mark.integration
def test_stop_strings_max_tokens_and_seeded_sampling(llama, exact):
    """Same seed, same text: on the default unified cache only while nothing else sits in it (cached
    prefixes, like concurrent neighbours, move the logits' last bits and so a near-tie), always with
    batch_invariant, cache on."""
    engine = make_engine(llama, **exact)
    try:
        (full, _), = run_all(engine, [request(llama, PROMPTS[2], max_tokens=24)])
        stop = full.strip().split("\n")[1].strip()[:6]
        (text, event), = run_all(engine, [request(llama, PROMPTS[2], stop=[stop])])
        assert event.finish_reason == "stop" and stop not in text and full.startswith(text)
        (text, event), = run_all(engine, [request(llama, PROMPTS[3], max_tokens=5)])
        assert event.finish_reason == "length" and event.completion_tokens == 5
        hot = dict(temperature=0.9, top_k=40, top_p=0.95, seed=1234)
        a = run_all(engine, [request(llama, PROMPTS[3], **hot)])[0]
        b = run_all(engine, [request(llama, PROMPTS[3], **hot)])[0]
        assert a[0] == b[0]  # same seed, same text
    finally:
        engine.stop()


def test_bounded_queue_refuses_instead_of_waiting(llama):
    engine = make_engine(llama, slots=1, queue_limit=1)
    try:
        sinks = [Collector(), Collector()]
        handles = [engine.submit(request(llama, PROMPTS[0], max_tokens=200), s) for s in sinks]
        with pytest.raises(EngineOverloaded):
            engine.submit(request(llama, PROMPTS[1]), Collector())
        for h in handles:
            h.cancel()
        deadline = time.monotonic() + 30
        while (engine.active or engine.waiting) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.active == 0 and engine.waiting == 0
        (text, event), = run_all(engine, [request(llama, PROMPTS[1], max_tokens=4)])  # slot reusable
        assert event.completion_tokens == 4
    finally:
        engine.stop()


def test_prompt_longer_than_context_is_refused(llama):
    engine = make_engine(llama, slots=1)
    try:
        with pytest.raises(ValueError, match="context window"):
            engine.submit(GenerationRequest(prompt_tokens=[2] * N_CTX, max_tokens=1), Collector())
    finally:
        engine.stop()


def test_a_sequence_stops_at_its_context_window(llama):
    """The KV cache is shared by all slots; no sequence may take more than n_ctx cells of it."""
    engine = Engine(llama, slots=2, queue_limit=2, n_ctx=40)
    engine.start()
    try:
        req = request(llama, PROMPTS[3], max_tokens=500)
        (text, event), (_, other) = run_all(engine, [req, request(llama, PROMPTS[1], max_tokens=8)])
        assert event.finish_reason == "length" and event.error is None
        assert len(req.prompt_tokens) + event.completion_tokens == 40
        assert other.completion_tokens == 8 and other.error is None
    finally:
        engine.stop()


def test_stop_fails_pending_requests(llama):
    engine = make_engine(llama, slots=1, queue_limit=2)
    sinks = [Collector() for _ in range(2)]
    for s in sinks:
        engine.submit(request(llama, PROMPTS[0], max_tokens=400), s)
    threading.Timer(0.2, engine.stop).start()
    for s in sinks:
        _, event = s.result(timeout=60)
        assert event.final


@pytest.mark.integration
def test_a_stuck_engine_fails_liveness_and_refuses_new_work(llama, monkeypatch):
    """No decode step for stall_s while a request waits: stuck. Idle for longer is not."""
    engine = make_engine(llama, slots=1, stall_s=0.5)
    release = threading.Event()
    original = Engine._step

    def wedged(self):  # the engine thread hangs inside a step, as a wedged llama_decode would
        release.wait()
        return original(self)

    monkeypatch.setattr(Engine, "_step", wedged)
    try:
        time.sleep(0.7)
        assert engine.liveness() is None and engine.stalled_s == 0.0  # idle, however long
        sink = Collector()
        engine.submit(request(llama, PROMPTS[1], max_tokens=4), sink)
        assert engine.liveness() is None  # work just arrived
        deadline = time.monotonic() + 10  # stall_s (0.5 s) with work waiting, however slow the box
        while engine.liveness() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "stuck: no decode step" in (engine.liveness() or "")
        with pytest.raises(EngineStopped, match="stuck"):  # refused at once, not queued behind it
            engine.submit(request(llama, PROMPTS[2], max_tokens=4), Collector())
        release.set()
        _, event = sink.result(timeout=60)
        assert event.completion_tokens == 4 and engine.liveness() is None  # progress again
    finally:
        release.set()
        engine.stop()


def test_a_dead_engine_thread_answers_its_requests_and_fails_liveness(llama, monkeypatch):
    engine = make_engine(llama, slots=1)

    def broken(self):
        raise RuntimeError("decode exploded")

    monkeypatch.setattr(Engine, "_step", broken)
    try:
        sink = Collector()
        engine.submit(request(llama, PROMPTS[1], max_tokens=4), sink)
        _, event = sink.result(timeout=30)  # a prompt error, not a hang
        assert "decode exploded" in event.error
        assert "decode exploded" in engine.liveness()
        with pytest.raises(EngineStopped, match="decode exploded"):
            engine.submit(request(llama, PROMPTS[1], max_tokens=4), Collector())
    finally:
        engine.stop()


@pytest.mark.parametrize("pieces, stops, released, stopped", [
    ([b"Hello", b" wor", b"ld"], [], "Hello world", False),
    ([b"abc", b"<e", b"nd>", b"tail"], ["<end>"], "abc", True),
    ([b"ab", b"<x"], ["<end>"], "ab<x", False),
    ([b"caf", b"\xc3", b"\xa9!"], [], "caf\u00e9!", False),
])
def test_text_stream(pieces, stops, released, stopped):
    stream = TextStream(stops)
    out = "".join(stream.push(p)[0] for p in pieces)
    out += stream.finish()
    assert out == released and stream.stopped == stopped


def test_text_stream_holds_back_partial_stop_and_utf8():
    stream = TextStream(["###"])
    assert stream.push(b"x #") == ("x ", False)  # "#" might start the stop string
    assert stream.push(b"\xe2\x82") == ("", False)  # half a euro sign: "#" still undecided
    assert stream.push(b"\xac") == ("#\u20ac", False)


def test_flash_attention_is_a_setting_off_by_default_and_reaches_the_context(gemma_path, tmp_path):
    """Off by default (greedy answers would depend on the batch); on, the engine's context runs it."""
    from suite.inference.model import llama_model_settings, load_llama
    from suite.settings import Settings

    default = Settings(data_dir=tmp_path, inference={"chat": {"path": str(gemma_path)}})
    assert llama_model_settings(default, "chat").flash_attn is False
    on = Settings(data_dir=tmp_path, inference={"chat": {"path": str(gemma_path), "flash_attn": True,
                                                         "n_ctx": 256, "n_threads": 2}})
    llm = load_llama(on, "chat")
    try:
        assert llm.context_params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        engine = Engine(llm, slots=2, queue_limit=2, n_ctx=128)
        engine.start()
        try:
            done, text = threading.Event(), []

            def sink(event):
                text.append(event.text or "")
                if event.final:
                    done.set()
            engine.submit(GenerationRequest(llm.tokenize(b"Question: 2 + 2?\nAnswer:"), 6, [],
                                            SamplingParams(temperature=0)), sink)
            assert done.wait(60) and "".join(text).strip()
        finally:
            engine.stop()
    finally:
        llm.close()


class ChoiceCollector:
    """A sync sink for a request with ``n`` choices: text per index, the final event per index."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.q: queue.Queue[Event] = queue.Queue()

    def __call__(self, event: Event) -> None:
        self.q.put(event)

    def result(self, timeout: float = 300) -> tuple[dict[int, str], dict[int, Event]]:
        texts: dict[int, str] = {}
        finals: dict[int, Event] = {}
        while len(finals) < self.n:
            event = self.q.get(timeout=timeout)
            assert event.index not in finals, "an event after its choice's final one"
            texts[event.index] = texts.get(event.index, "") + event.text
            if event.final:
                finals[event.index] = event
        return texts, finals


@pytest.mark.integration
def test_n_choices_share_one_prompt_prefill(llama):
    engine = make_engine(llama, slots=4, batch_invariant=True)
    prompt = completion_prompt_tokens(llama, PROMPTS[0])
    try:
        (one, _), = run_all(engine, [request(llama, PROMPTS[0], max_tokens=12)])
        before = engine.cache_info()
        sink = ChoiceCollector(3)
        engine.submit(GenerationRequest(prompt, 12, [], SamplingParams(temperature=0.0, repeat_penalty=1.1, seed=7),
                                        n=3), sink)
        texts, finals = sink.result()
        assert texts == {0: one, 1: one, 2: one}  # greedy: the same answer, each choice on its own cells
        assert all(f.finish_reason == "length" and f.completion_tokens == 12 and f.error is None
                   for f in finals.values())
        info = engine.cache_info()
        assert info["tokens_prefilled"] - before["tokens_prefilled"] == len(prompt)  # once for the three
        assert info["tokens_reused"] - before["tokens_reused"] == 2 * len(prompt)

        def hot() -> dict[int, str]:
            sink = ChoiceCollector(3)
            engine.submit(GenerationRequest(prompt, 16, [], SamplingParams(temperature=1.0, seed=11), n=3), sink)
            return sink.result()[0]

        first = hot()
        assert len(set(first.values())) > 1  # every choice has its own seed
        assert hot() == first  # and the same seed gives the same choices
        with pytest.raises(ValueError, match="n must be between 1 and 4"):
            engine.submit(GenerationRequest(prompt, 4, n=5), Collector())
        handle = engine.submit(GenerationRequest(prompt, 400, [], SamplingParams(temperature=0.0), n=4),
                               ChoiceCollector(4))
        time.sleep(0.3)
        handle.cancel()
        deadline = time.monotonic() + 30
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.active == 0 and engine.kv.mismatches() == []
    finally:
        engine.stop()


def test_logprobs_of_every_token(llama):
    engine = make_engine(llama, slots=2)
    prompt = completion_prompt_tokens(llama, PROMPTS[1])
    try:
        sink = ChoiceCollector(1)
        events: list[Event] = []
        engine.submit(GenerationRequest(prompt, 10, [], SamplingParams(temperature=0.0), logprobs=3),
                      lambda e: (events.append(e), sink(e)))
        _, finals = sink.result()
        tokens = [t for e in events for t in e.tokens]
        entries = [lp for e in events for lp in e.logprobs]
        assert all(len(e.logprobs) == len(e.tokens) for e in events)
        assert len(tokens) == len(entries) == finals[0].completion_tokens == 10
        for token, lp in zip(tokens, entries):
            assert lp.token == token and len(lp.top) == 3
            assert lp.top[0][0] == token and lp.logprob == pytest.approx(lp.top[0][1])  # greedy: the most likely
            assert lp.top[0][1] >= lp.top[1][1] >= lp.top[2][1] and lp.logprob <= 0
            assert sum(math.exp(v) for _, v in lp.top) <= 1 + 1e-6
        # the first token's figures from an independent log-softmax of llama-cpp-python's own logits
        llama.reset()
        llama.eval(prompt)
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama._ctx.ctx, -1),
                                    (llama.n_vocab(),)).astype(np.float64)
        llama.reset()
        logsoftmax = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
        assert [t for t, _ in entries[0].top] == list(np.argsort(-logsoftmax)[:3])
        assert entries[0].logprob == pytest.approx(logsoftmax[tokens[0]], abs=1e-3)
        plain = ChoiceCollector(1)
        seen: list[Event] = []
        engine.submit(GenerationRequest(prompt, 3, [], SamplingParams(temperature=0.0), logprobs=0),
                      lambda e: (seen.append(e), plain(e)))
        plain.result()
        assert all(lp.top == [] for e in seen for lp in e.logprobs)
        (_, off), = run_all(engine, [request(llama, PROMPTS[1], max_tokens=3)])
        assert off.logprobs is None
        with pytest.raises(ValueError, match="logprobs must be between 0 and 20"):
            engine.submit(GenerationRequest(prompt, 3, logprobs=21), Collector())
    finally:
        engine.stop()


def test_unmetered_requests_are_not_counted(llama):
    counted = {"tokens": 0, "first": 0}
    hooks = EngineHooks(first_token=lambda s: counted.__setitem__("first", counted["first"] + 1),
                        tokens=lambda n: counted.__setitem__("tokens", counted["tokens"] + n))
    engine = make_engine(llama, slots=1, hooks=hooks)
    try:
        probe = GenerationRequest(completion_prompt_tokens(llama, "Hello"), 2, [], SamplingParams(temperature=0.0),
                                  metered=False)
        sink = Collector()
        engine.submit(probe, sink)
        assert sink.result()[1].completion_tokens == 2 and counted == {"tokens": 0, "first": 0}
        run_all(engine, [request(llama, PROMPTS[1], max_tokens=3)])
        assert counted == {"tokens": 3, "first": 1}
    finally:
        engine.stop()


def test_adaptive_threads_halve_under_contention_and_keep_the_answer(llama, serial):
    """With ``adaptive_threads`` the engine decodes with half its threads while its thread waits for a
    CPU (a fake runqueue: every decode waited its whole time) and gives the same greedy tokens."""
    engine = make_engine(llama, slots=2, prefix_cache_tokens=0, adaptive_threads=True)
    try:
        assert engine.threads_info() == {"now": 2, "configured": 2, "changes": 0}
        busy = {"waited": 0.0}

        def waited() -> float:  # each read: another second in the runqueue
            busy["waited"] += 1.0
            return busy["waited"]

        engine.governor._wait = waited
        (text, event), = run_all(engine, [request(llama, PROMPTS[0])])
        assert engine.threads_info()["now"] == 1 and engine.threads_info()["changes"] == 1
        assert (text, event.completion_tokens) == serial[PROMPTS[0]]
    finally:
        engine.stop()

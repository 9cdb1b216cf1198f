"""Per-sequence sampler chains built with llama.cpp's native sampler API.

The chain mirrors ``llama_cpp.Llama._init_sampler`` step for step (logit bias, penalties, grammar,
then greedy / mirostat / top-k -> typical -> top-p -> min-p -> temperature -> dist), so a sequence
sampled here picks the same tokens as the serial ``llama_cpp.server`` path for the same settings.

One difference, where a grammar constrains the output: llama.cpp's grammar sampler checks every
token of the vocabulary against the grammar (Gemma's 262k pieces: ~0.3 s a token on this CPU,
measured, on the engine thread that samples every sequence of the step in turn). ``GrammarLast``
samples the way llama-server does (``common_sampler_sample``): the rest of the chain picks a token
first and the grammar checks only that one, which it allows for most tokens. When it refuses it
(20-40 % of the tokens of a tool call or a schema's JSON with Gemma 3 270M), the grammar checks the
``GRAMMAR_CANDIDATES`` most likely tokens and the token is picked again among those it allows, or,
if it allows none of them, among every token it allows (llama-server checks the whole vocabulary
there). Greedy decoding picks exactly what a full check would; sampling draws from the allowed
tokens among the 256 most likely, which with the default top-k of 40 is what it drew from anyway
unless fewer than 40 of those 256 are allowed. ``benchmarks/grammar_sampling.py``: 17-46x less
sampling time per constrained token than the full check, the same tokens picked.
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

log = logging.getLogger(__name__)

MIROSTAT_M = 100  # the constant llama-cpp-python uses for mirostat v1


class SamplerError(ValueError):
    """The sampling parameters cannot be turned into a sampler (e.g. a grammar that does not parse)."""


@dataclass
class SamplingParams:
    """What one request asks of the sampler; defaults are llama-cpp-python's ``create_completion``'s."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int = llama_cpp.LLAMA_DEFAULT_SEED
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: str | None = None
    # regexes (llama.cpp's std::regex, searched in the text generated so far at every token): the
    # grammar applies only from a match on, to the text from the match's first group on
    grammar_triggers: list[str] | None = None


def build_sampler(params: SamplingParams, vocab, n_vocab: int):
    """A new sampler chain (a ``llama_sampler *``) for ``params``; free it with ``free_sampler``."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    seed = params.seed & 0xFFFFFFFF

    def add(smpl) -> None:
        if not smpl:
            free_sampler(chain)
            raise SamplerError("llama.cpp refused the sampler parameters")
        llama_cpp.llama_sampler_chain_add(chain, smpl)

    if params.logit_bias:
        biases = (llama_cpp.llama_logit_bias * len(params.logit_bias))()
        for i, (token, bias) in enumerate(params.logit_bias.items()):
            biases[i].token = token
            biases[i].bias = bias
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
    add(llama_cpp.llama_sampler_init_penalties(
        n_vocab, params.penalty_last_n, params.repeat_penalty, params.frequency_penalty,
        params.presence_penalty))
    if params.grammar is not None:
        grammar = grammar_sampler(params, vocab)
        if not grammar:
            free_sampler(chain)
            raise SamplerError("grammar does not parse")
        tail = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        try:
            _add_tail(params, n_vocab, seed, lambda smpl: _add_to(tail, smpl))
        except SamplerError:
            free_sampler(tail)
            free_sampler(grammar)
            free_sampler(chain)
            raise
        llama_cpp.llama_sampler_chain_add(chain, GrammarLast(grammar, tail).sampler)
        return chain
    _add_tail(params, n_vocab, seed, add)
    return chain


def _add_to(chain, smpl) -> None:
    if not smpl:
        raise SamplerError("llama.cpp refused the sampler parameters")
    llama_cpp.llama_sampler_chain_add(chain, smpl)


def _add_tail(params: SamplingParams, n_vocab: int, seed: int, add) -> None:
    """The samplers that pick the token: greedy, mirostat, or top-k -> typical -> top-p -> min-p -> temp -> dist."""
    if params.temperature < 0.0:
        add(llama_cpp.llama_sampler_init_dist(seed))
    elif params.temperature == 0.0:
        add(llama_cpp.llama_sampler_init_greedy())
    elif params.mirostat_mode == 1:
        add(llama_cpp.llama_sampler_init_mirostat(
            n_vocab, seed, params.mirostat_tau, params.mirostat_eta, MIROSTAT_M))
    elif params.mirostat_mode == 2:
        add(llama_cpp.llama_sampler_init_mirostat_v2(seed, params.mirostat_tau, params.mirostat_eta))
    else:
        add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        add(llama_cpp.llama_sampler_init_typical(params.typical_p, 1))
        add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        add(llama_cpp.llama_sampler_init_dist(seed))


GRAMMAR_CANDIDATES = 256
_TOKEN_DATA = ctypes.sizeof(llama_cpp.llama_token_data)
_TOKEN_DTYPE = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
_live: dict[int, GrammarLast] = {}  # sampler address -> its Python side (callbacks, interface)
# freed ones stay referenced a while: the callback that freed one may still be returning through its thunk
_freed: deque[GrammarLast] = deque(maxlen=256)
_scratch = threading.local()


class GrammarLast:
    """A llama.cpp sampler (Python callbacks) that picks with ``tail`` and checks with ``grammar``
    only the token picked (see the module's docstring); it owns and frees both."""

    def __init__(self, grammar, tail) -> None:
        self.grammar, self.tail = grammar, tail
        self._one = (llama_cpp.llama_token_data * 1)()
        self._single = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        iface = self.iface = llama_cpp.llama_sampler_i()
        self._callbacks = (llama_cpp.llama_sampler_i_accept(self._accept), llama_cpp.llama_sampler_i_apply(self._apply),
                           llama_cpp.llama_sampler_i_reset(self._reset), llama_cpp.llama_sampler_i_free(self._free))
        iface.accept, iface.apply, iface.reset, iface.free = self._callbacks
        self.sampler = llama_cpp.llama_sampler_init(ctypes.byref(iface), None)
        _live[ctypes.addressof(self.sampler.contents)] = self

    def _apply(self, _smpl, cur_p) -> None:
        arr = cur_p.contents
        size, was_sorted = arr.size, arr.sorted
        nbytes = size * _TOKEN_DATA
        keep = getattr(_scratch, "buf", None)
        if keep is None or len(keep) < nbytes:
            keep = _scratch.buf = ctypes.create_string_buffer(nbytes)
        try:
            ctypes.memmove(keep, arr.data, nbytes)
            llama_cpp.llama_sampler_apply(self.tail, cur_p)
            if 0 <= arr.selected < arr.size and self._allowed(arr.data[arr.selected].id):
                return
            if self._among_likely(arr, cur_p, keep, size):
                return
        except Exception:  # never leave a token the grammar was not asked about
            log.exception("grammar-last sampling failed; applying the grammar to every token")
        ctypes.memmove(arr.data, keep, nbytes)
        arr.size, arr.sorted, arr.selected = size, was_sorted, -1
        llama_cpp.llama_sampler_apply(self.grammar, cur_p)
        llama_cpp.llama_sampler_apply(self.tail, cur_p)

    def _among_likely(self, arr, cur_p, keep, size: int) -> bool:
        """Pick again among the allowed tokens of the most likely ``GRAMMAR_CANDIDATES``; False if
        the grammar allows none of them."""
        m = min(GRAMMAR_CANDIDATES, size)
        original = np.frombuffer(keep, dtype=_TOKEN_DTYPE, count=size)
        top = original[np.argpartition(-original["logit"], m - 1)[:m]] if m < size else original.copy()
        ctypes.memmove(arr.data, top.ctypes.data, m * _TOKEN_DATA)
        arr.size, arr.sorted, arr.selected = m, False, -1
        llama_cpp.llama_sampler_apply(self.grammar, cur_p)
        checked = np.ctypeslib.as_array(ctypes.cast(arr.data, ctypes.POINTER(ctypes.c_uint8)), (m * _TOKEN_DATA,))
        checked = checked.view(_TOKEN_DTYPE)
        allowed = checked[np.isfinite(checked["logit"])]
        if not len(allowed):
            return False
        allowed = np.ascontiguousarray(allowed)
        ctypes.memmove(arr.data, allowed.ctypes.data, len(allowed) * _TOKEN_DATA)
        arr.size, arr.sorted, arr.selected = len(allowed), False, -1
        llama_cpp.llama_sampler_apply(self.tail, cur_p)
        return True

    def _allowed(self, token: int) -> bool:
        one = self._one[0]
        one.id, one.logit, one.p = token, 1.0, 0.0
        self._single.size, self._single.selected = 1, -1
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._single))
        return not math.isinf(self._one[0].logit)

    def _accept(self, _smpl, token: int) -> None:
        llama_cpp.llama_sampler_accept(self.grammar, token)
        llama_cpp.llama_sampler_accept(self.tail, token)

    def _reset(self, _smpl) -> None:
        llama_cpp.llama_sampler_reset(self.grammar)
        llama_cpp.llama_sampler_reset(self.tail)

    def _free(self, smpl) -> None:
        llama_cpp.llama_sampler_free(self.grammar)
        llama_cpp.llama_sampler_free(self.tail)
        self.grammar = self.tail = None
        me = _live.pop(ctypes.addressof(smpl.contents), None)
        if me is not None:
            _freed.append(me)


def grammar_sampler(params: SamplingParams, vocab):
    """llama.cpp's grammar sampler for ``params.grammar`` (lazy with ``grammar_triggers``); NULL if it
    does not parse."""
    text = params.grammar.encode("utf-8")
    if not params.grammar_triggers:
        return llama_cpp.llama_sampler_init_grammar(vocab, text, b"root")
    patterns = (ctypes.c_char_p * len(params.grammar_triggers))(*(p.encode("utf-8") for p in params.grammar_triggers))
    return llama_cpp.llama_sampler_init_grammar_lazy_patterns(vocab, text, b"root", patterns,
                                                              len(params.grammar_triggers), None, 0)


def greedy_repeat_penalty(params: SamplingParams) -> float | None:
    """The repeat penalty when the chain ``build_sampler`` makes is "repeat penalty, then arg-max"; else None.

    Temperature 0 selects llama.cpp's greedy sampler, and with no logit bias, no grammar and no
    frequency or presence penalty the only sampler before it is the repeat penalty (a no-op at 1.0),
    so ``greedy_token`` can do the same without the chain's copy of the 262k-entry vocabulary into a
    candidate array per token (~320 us of CPU against ~60 us, measured on this box).
    """
    if (params.temperature != 0.0 or params.logit_bias or params.grammar is not None
            or params.frequency_penalty != 0.0 or params.presence_penalty != 0.0):
        return None
    return params.repeat_penalty


def greedy_token(logits: np.ndarray, generated: list[int], repeat_penalty: float, last_n: int) -> int:
    """What llama.cpp's penalties + greedy samplers pick from one float32 logits row (not modified).

    Its repeat penalty divides a positive logit (multiplies a non-positive one) of every token among
    the last ``last_n`` accepted ones, in float32: the same single rounded operation here. Greedy
    takes the first maximum, as ``argmax`` does.
    """
    if repeat_penalty != 1.0 and last_n > 0 and generated:
        ids = np.fromiter(set(generated[-last_n:]), dtype=np.intp)
        seen = logits[ids]
        penalty = np.float32(repeat_penalty)
        logits = logits.copy()
        logits[ids] = np.where(seen <= 0, seen * penalty, seen / penalty)
    return int(logits.argmax())


def free_sampler(chain) -> None:
    """Free a chain and every sampler it owns (the chain frees its members)."""
    if chain:
        llama_cpp.llama_sampler_free(chain)


def token_piece(vocab, token: int) -> bytes:
    """The bytes a token stands for (special tokens render as nothing, like ``Llama.detokenize``)."""
    size = 32
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, False)
        if n >= 0:
            return buf.raw[:n]
        size = -n


__all__ = ["GrammarLast", "SamplingParams", "SamplerError", "build_sampler", "free_sampler", "grammar_sampler",
           "greedy_repeat_penalty",
           "greedy_token", "token_piece"]

"""Per-sequence sampler chains built with llama.cpp's native sampler API.

The chain mirrors ``llama_cpp.Llama._init_sampler`` step for step (logit bias, penalties, grammar,
then greedy / mirostat / top-k -> typical -> top-p -> min-p -> temperature -> dist), so a sequence
sampled here picks the same tokens as the serial ``llama_cpp.server`` path for the same settings.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

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
        grammar = llama_cpp.llama_sampler_init_grammar(vocab, params.grammar.encode("utf-8"), b"root")
        if not grammar:
            free_sampler(chain)
            raise SamplerError("grammar does not parse")
        llama_cpp.llama_sampler_chain_add(chain, grammar)

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
    return chain


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


__all__ = ["SamplingParams", "SamplerError", "build_sampler", "free_sampler", "greedy_repeat_penalty",
           "greedy_token", "token_piece"]

"""The OpenAI surface of ``llama_cpp.server`` re-expressed over the batching engine.

Request types come from ``llama_cpp.server.types``, chat prompts from ``llama_cpp.llama_chat_format``
and the chat response / chunk shapes from its converters, so the batched service answers exactly
like the serial one. Only the parts that must change (tokenizing the prompt the way
``Llama._create_completion`` does, turning request fields into sampling parameters) live here.
"""

from __future__ import annotations

import inspect
import json
import random
import time
import uuid
from typing import Any

import llama_cpp
from llama_cpp import llama_chat_format, llama_grammar
from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest

from suite.inference.engine import GenerationRequest
from suite.inference.sampling import SamplerError, SamplingParams, build_sampler, free_sampler
from suite.web import ApiError

Body = CreateCompletionRequest | CreateChatCompletionRequest
# No vocabulary here averages anywhere near 16 characters per token (Gemma: ~4.6 bytes per token on
# English, fewer on Korean), so a text longer than 16 characters per context token is probed first.
PROBE_CHARS_PER_TOKEN = 16


def bad_request(message: str, code: str = "invalid_parameters") -> ApiError:
    return ApiError(400, message, code=code)


def chat_formatter(name: str) -> llama_chat_format.ChatFormatter:
    """The formatter registered under ``name`` (e.g. "gemma"), taken from its registered handler."""
    handler = llama_chat_format.get_chat_completion_handler(name)
    formatter = inspect.getclosurevars(handler).nonlocals.get("chat_formatter")
    if formatter is None:
        raise ValueError(f"chat format {name!r} is a custom handler, not a prompt formatter; "
                         "the batched engine supports prompt formatters only")
    return formatter


def completion_prompt_tokens(llama: llama_cpp.Llama, prompt: str) -> list[int]:
    """Tokens for a text prompt exactly as ``Llama._create_completion`` builds them (no suffix)."""
    bos, cls, sep = llama.token_bos(), llama._model.token_cls(), llama._model.token_sep()
    head = [cls if cls != -1 else bos]
    if not llama._model.add_bos_token() or head[:1] == [-1]:
        head = []
    tail = [sep if sep != -1 else llama.token_eos()]
    if not llama._model.add_eos_token() and sep == -1:
        tail = []
    body = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) if prompt else []
    tokens = head + body + tail
    return tokens or [bos]


def refuse_oversized(llama: llama_cpp.Llama, text: str, n_ctx: int) -> None:
    """400 for a text far longer than the context, found by tokenizing a prefix only.

    Tokenizing costs ~5 µs per byte on this CPU (a 1 MB prompt: seconds of a core); a prefix of
    ``PROBE_CHARS_PER_TOKEN * n_ctx`` characters that alone fills the context settles it.
    """
    probe = PROBE_CHARS_PER_TOKEN * n_ctx
    if len(text) <= probe:
        return
    n = len(llama.tokenize(text[:probe].encode("utf-8"), add_bos=False, special=True))
    if n >= n_ctx:
        raise bad_request(f"prompt is longer than this model's context of {n_ctx} tokens (its first {probe} "
                          f"of {len(text)} characters alone are {n} tokens)", code="context_length_exceeded")


def check_tokenize_input(text: str, n_ctx: int) -> None:
    """``/extras/tokenize``: a text longer than any prompt could be is a 400, not seconds of CPU."""
    limit = PROBE_CHARS_PER_TOKEN * n_ctx
    if len(text) > limit:
        raise bad_request(f"input is {len(text)} characters; this server tokenizes at most {limit} "
                          f"({PROBE_CHARS_PER_TOKEN} per token of its {n_ctx}-token context)",
                          code="input_too_long")


def check_supported(body: Body) -> None:
    """Refuse, with a 400, what the batched engine does not do (instead of silently ignoring it)."""
    if (body.n or 1) != 1 or (getattr(body, "best_of", 1) or 1) != 1:
        raise bad_request("n and best_of must be 1 on this server")
    if body.logprobs:
        raise bad_request("logprobs are not supported by this server")
    if body.min_tokens > 0:
        raise bad_request("min_tokens is not supported by the batched engine")
    if isinstance(body, CreateCompletionRequest):
        if body.suffix is not None:
            raise bad_request("suffix is not supported by this model")
        if isinstance(body.prompt, list) and len(body.prompt) > 1:
            raise bad_request("one prompt per request")
    else:
        if body.tools or body.functions or body.tool_choice or body.function_call:
            raise bad_request("tools and functions are not supported by the batched engine")


def logit_bias(llama: llama_cpp.Llama, body: Body) -> dict[int, float]:
    """Token id -> bias; ids outside the vocabulary are a 400 (llama.cpp would index past its logits)."""
    if not body.logit_bias:
        return {}
    out: dict[int, float] = {}
    n_vocab = llama.n_vocab()
    for key, bias in body.logit_bias.items():
        if body.logit_bias_type == "tokens":
            for token in llama.tokenize(key.encode("utf-8"), add_bos=False, special=True):
                out[token] = float(bias)
        else:
            try:
                token = int(key)
            except ValueError:
                raise bad_request(f"logit_bias key {key[:40]!r} is not a token id", code="invalid_token") from None
            if not 0 <= token < n_vocab:
                raise bad_request(f"logit_bias token id {token} is not in this model's vocabulary "
                                  f"(0..{n_vocab - 1})", code="invalid_token")
            out[token] = float(bias)
    return out


def check_sampler(llama: llama_cpp.Llama, params: SamplingParams) -> None:
    """Build the request's sampler chain once, here, and free it: a grammar that does not parse or
    values llama.cpp refuses are a 400 before the request takes a place in the queue."""
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    try:
        free_sampler(build_sampler(params, vocab, llama.n_vocab()))
    except SamplerError as exc:
        raise bad_request(f"invalid sampling parameters: {exc}", code="invalid_sampling") from None


def sampling_params(llama: llama_cpp.Llama, body: Body, rng: random.Random) -> SamplingParams:
    """Sampling as ``Llama._init_sampler`` would set it up for this request."""
    grammar = body.grammar
    fmt = getattr(body, "response_format", None)
    if fmt is not None and fmt.get("type") == "json_object":
        grammar = llama_grammar.JSON_GBNF
    return SamplingParams(
        temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, min_p=body.min_p,
        repeat_penalty=body.repeat_penalty, frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0, penalty_last_n=llama.last_n_tokens_size,
        mirostat_mode=body.mirostat_mode, mirostat_tau=body.mirostat_tau, mirostat_eta=body.mirostat_eta,
        seed=body.seed if body.seed is not None else rng.randint(0, 2**32),
        logit_bias=logit_bias(llama, body), grammar=grammar)


def _stop_list(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def max_tokens_for(requested: int | None, n_prompt: int, n_ctx: int, cap: int | None = None) -> int:
    """``Llama._create_completion``'s rule: none or <= 0 means up to the context, and never past it;
    never past ``cap`` (``inference.max_tokens_cap``) either."""
    room = n_ctx - n_prompt
    if requested is None or requested <= 0:
        requested = room
    return min(requested, room, cap or room)


def build_request(llama: llama_cpp.Llama, body: Body, n_ctx: int, rng: random.Random,
                  formatter: llama_chat_format.ChatFormatter | None = None,
                  max_tokens_cap: int | None = None) -> tuple[GenerationRequest, str]:
    """The engine request for an API body, and the prompt text (for ``echo``).

    Blocking (tokenizing a long prompt, parsing a grammar): call it from a worker thread. Everything
    a client can get wrong is a 400 here, before the request is queued.
    """
    check_supported(body)
    stop = _stop_list(body.stop)
    if isinstance(body, CreateChatCompletionRequest):
        if formatter is None:
            raise bad_request("chat completions are not configured on this server")
        try:
            result = formatter(messages=body.messages)
        except Exception as exc:  # the model's chat template refused these messages
            raise bad_request(f"messages cannot be formatted for this model: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None
        prompt = result.prompt
        refuse_oversized(llama, prompt, n_ctx)
        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stop += _stop_list(result.stop)
    else:
        if isinstance(body.prompt, list):  # [] is "" as llama_cpp.server has it (schemathesis found an IndexError)
            prompt = body.prompt[0] if body.prompt else ""
        else:
            prompt = body.prompt or ""
        refuse_oversized(llama, prompt, n_ctx)
        tokens = completion_prompt_tokens(llama, prompt)
    if len(tokens) >= n_ctx:
        raise bad_request(f"Requested tokens ({len(tokens)}) exceed context window of {n_ctx}",
                          code="context_length_exceeded")
    sampling = sampling_params(llama, body, rng)
    check_sampler(llama, sampling)
    request = GenerationRequest(prompt_tokens=tokens, stop=stop,
                                max_tokens=max_tokens_for(body.max_tokens, len(tokens), n_ctx, max_tokens_cap),
                                sampling=sampling)
    return request, prompt


TEXT_SLOT = "\x00text\x00"  # stands for a chunk's text while its SSE template is made


class CompletionShape:
    """Builds ``text_completion`` objects and chunks (chat ones for ``chat``) with one id and timestamp
    per request, and their SSE lines."""

    def __init__(self, model: str, chat: bool = False) -> None:
        self.id = f"cmpl-{uuid.uuid4()}"
        self.created = int(time.time())
        self.model = model
        self.chat = chat
        # A text chunk differs from the next only in its text, so its SSE line is a template made once
        # from the real chunk (llama-cpp-python's chat converter included) with only the text encoded
        # per token: a twentieth of building and dumping the dict each time. The text comes after the
        # client-chosen model name in the JSON, hence the last occurrence of the slot.
        sample = json.dumps(self._chunks(self.chunk(TEXT_SLOT), first=False)[0])
        head, _, tail = sample.rpartition(json.dumps(TEXT_SLOT))
        self._text_head, self._text_tail = f"data: {head}", f"{tail}\n\n"

    def chunk(self, text: str, finish_reason: str | None = None) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}

    def completion(self, text: str, finish_reason: str, n_prompt: int, n_completion: int) -> dict[str, Any]:
        out = self.chunk(text, finish_reason)
        out["usage"] = {"prompt_tokens": n_prompt, "completion_tokens": n_completion,
                        "total_tokens": n_prompt + n_completion}
        return out

    def sse_text(self, text: str) -> str:
        """The SSE line of a chunk carrying ``text`` (not the first chunk of a chat stream)."""
        return self._text_head + json.dumps(text) + self._text_tail

    def sse(self, text: str, finish_reason: str | None, first: bool) -> str:
        """The SSE lines of any chunk; the first of a chat stream is preceded by its role delta."""
        return "".join(f"data: {json.dumps(c)}\n\n" for c in self._chunks(self.chunk(text, finish_reason), first))

    def _chunks(self, chunk: dict[str, Any], first: bool) -> list[dict[str, Any]]:
        return chat_chunks(chunk, first) if self.chat else [chunk]


def chat_chunks(chunk: dict[str, Any], first: bool) -> list[dict[str, Any]]:
    """A completion chunk as chat chunks, via llama-cpp-python's own converter (role delta first)."""
    converted = list(llama_chat_format._convert_text_completion_chunks_to_chat(iter([chunk])))
    return converted if first else converted[1:]


def chat_completion(completion: dict[str, Any]) -> dict[str, Any]:
    return llama_chat_format._convert_text_completion_to_chat(completion)


__all__ = ["CompletionShape", "build_request", "chat_chunks", "chat_completion", "chat_formatter",
           "completion_prompt_tokens", "max_tokens_for"]

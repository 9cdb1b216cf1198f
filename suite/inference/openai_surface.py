"""The OpenAI surface of ``llama_cpp.server`` re-expressed over the batching engine, at llama-server's level.

Request types come from ``llama_cpp.server.types`` (``request_types`` bounds them), chat prompts
from ``chat_prompt`` (llama-cpp-python's formats, with system messages kept and nothing dropped),
tool calls from ``tool_calls`` and JSON Schemas from ``schema_grammar``; the completion shapes are
llama-cpp-python's converters' where they have one, so the batched service answers like the serial
one. This module turns a request body into what the engine runs (``build_request``): the prompt
tokens, the sampling, one sampler chain per choice (``n``) built here, in a worker thread, so the
engine admits a request without parsing a grammar under its lock, and how the answer is to be shaped.

Every field is honoured or refused (``check_fields``): OpenAI fields this server does not do are a
400 naming them, never silently ignored; ``FIELDS`` lists the few accepted ones that change nothing
in an answer, and at which values.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import llama_cpp
from llama_cpp import llama_chat_format, llama_grammar
from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest

from suite.inference.chat_prompt import ChatTemplate, PromptError
from suite.inference.engine import GenerationRequest
from suite.inference.sampling import SamplerError, SamplingParams, build_sampler, free_sampler
from suite.inference.schema_grammar import SchemaError, check_schema, schema_to_grammar
from suite.inference.tool_calls import TRIGGER, ToolError, ToolPlan, call_grammar, plan_tools
from suite.web import ApiError

Body = CreateCompletionRequest | CreateChatCompletionRequest
# No vocabulary here averages anywhere near 16 characters per token (Gemma: ~4.6 bytes per token on
# English, fewer on Korean), so a text longer than 16 characters per context token is probed first.
PROBE_CHARS_PER_TOKEN = 16


def _only(*values: Any) -> Callable[[Any], bool]:
    return lambda value: value in values


# OpenAI request fields accepted although they change nothing in an answer, and the values at which
# that is true; any other value, and any field neither declared by the request types nor listed here,
# is a 400 naming it.
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "safety_identifier": (lambda v: v is None or isinstance(v, str), "an end-user id; nothing is done with it"),
    "prompt_cache_key": (lambda v: v is None or isinstance(v, str), "prompt prefixes are reused automatically"),
    "store": (_only(None, False), "nothing is stored"),
    "metadata": (lambda v: not v, "kept only with store, which this server does not do"),
    "service_tier": (_only(None, "auto", "default"), "one tier"),
    "modalities": (lambda v: v in (None, ["text"]), "text only"),
}


def bad_request(message: str, code: str = "invalid_parameters") -> ApiError:
    return ApiError(400, message, code=code)


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


def check_fields(body: Body) -> None:
    """Refuse, with a 400 naming it, every field this server would otherwise ignore."""
    for name, value in (body.model_extra or {}).items():
        rule = FIELDS.get(name)
        if rule is None:
            raise bad_request(f"'{name[:64]}' is not supported by this server", code="unsupported_parameter")
        accepts, why = rule
        if not accepts(value):
            raise bad_request(f"'{name}' is only accepted at a value that changes nothing here ({why}); "
                              f"got {json.dumps(value)[:80]}", code="unsupported_parameter")
    options = body.stream_options
    if options is not None:
        if not body.stream:
            raise bad_request("stream_options is only allowed with stream: true")
        if options.model_extra:
            raise bad_request(f"stream_options.{next(iter(options.model_extra))[:64]} is not supported by this "
                              "server", code="unsupported_parameter")
    if body.min_tokens > 0:
        raise bad_request("min_tokens is not supported by the batched engine")
    if isinstance(body, CreateCompletionRequest):
        if body.suffix is not None:
            raise bad_request("suffix is not supported by this model")
        if isinstance(body.prompt, list) and len(body.prompt) > 1:
            raise bad_request("one prompt per request")
        if body.best_of is not None and body.best_of != (body.n or 1):
            raise bad_request("best_of must equal n on this server (it ranks no choices)")
        if body.echo and body.logprobs is not None:
            raise bad_request("echo with logprobs is not supported (it needs the prompt's logprobs)")
    elif body.top_logprobs is not None and not body.logprobs:
        raise bad_request("top_logprobs needs logprobs: true")


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


def answer_schema(body: Body) -> tuple[dict[str, Any] | None, bool] | None:
    """What ``response_format`` asks of the answer: None (free text), or (a JSON Schema, or None for
    any JSON, and whether it is strict)."""
    fmt = getattr(body, "response_format", None)
    if fmt is None:
        return None
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = fmt.get("schema")
        if schema is not None:
            _checked(schema, False, "response_format.schema")
        return schema, False
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise bad_request("response_format.json_schema must be an object with a schema")
        strict = spec.get("strict")
        if strict not in (None, True, False):
            raise bad_request("response_format.json_schema.strict must be a boolean")
        schema = spec.get("schema", {"type": "object"})
        _checked(schema, bool(strict), "response_format.json_schema.schema")
        return schema, bool(strict)
    raise bad_request(f"response_format.type must be text, json_object or json_schema (got {str(kind)[:40]})")


def _checked(schema: Any, strict: bool, where: str) -> None:
    try:
        check_schema(schema, strict, where)
    except SchemaError as exc:
        raise bad_request(str(exc), code="invalid_schema") from None


def output_grammar(body: Body, plan: ToolPlan | None) -> tuple[str | None, list[str] | None]:
    """The grammar the output must follow, and its lazy triggers: the client's ``grammar``, the
    ``response_format``'s, the tool calls', or (tools offered with ``auto`` and a JSON answer
    format) "calls or the JSON answer". Two that cannot be combined are a 400, not a silent pick."""
    answer = answer_schema(body)
    tools = plan is not None and plan.active
    if body.grammar is not None and (answer is not None or tools):
        raise bad_request("grammar cannot be combined with response_format or tools (each constrains the "
                          "output); send one")
    try:
        if tools and answer is not None and plan.choice == "auto":
            schema, _ = answer
            return call_grammar(plan.offered, plan.parallel, schema if schema is not None else {"type": "object"}), None
        if tools:
            return plan.grammar, [TRIGGER] if plan.lazy else None
        if answer is not None:
            schema, strict = answer
            return (llama_grammar.JSON_GBNF if schema is None else schema_to_grammar(schema, strict)), None
    except (SchemaError, ToolError) as exc:
        raise bad_request(str(exc), code="invalid_schema") from None
    return body.grammar, None


def sampling_params(llama: llama_cpp.Llama, body: Body, rng: random.Random,
                    plan: ToolPlan | None = None) -> SamplingParams:
    """Sampling as ``Llama._init_sampler`` would set it up for this request."""
    grammar, triggers = output_grammar(body, plan)
    return SamplingParams(
        temperature=body.temperature, top_k=body.top_k, top_p=body.top_p, min_p=body.min_p,
        repeat_penalty=body.repeat_penalty, frequency_penalty=body.frequency_penalty or 0.0,
        presence_penalty=body.presence_penalty or 0.0, penalty_last_n=llama.last_n_tokens_size,
        mirostat_mode=body.mirostat_mode, mirostat_tau=body.mirostat_tau, mirostat_eta=body.mirostat_eta,
        seed=body.seed if body.seed is not None else rng.randint(0, 2**32),
        logit_bias=logit_bias(llama, body), grammar=grammar, grammar_triggers=triggers)


def build_samplers(llama: llama_cpp.Llama, params: SamplingParams, n: int) -> list:
    """One sampler chain per choice (seeds ``seed``, ``seed + 1``...), built here rather than under the
    engine's lock; a grammar that does not parse or values llama.cpp refuses are a 400 before the
    request takes a place in the queue."""
    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    chains: list = []
    try:
        for i in range(n):
            chains.append(build_sampler(dataclasses.replace(params, seed=params.seed + i), vocab, llama.n_vocab()))
    except SamplerError as exc:
        free_samplers(chains)
        raise bad_request(f"invalid sampling parameters: {exc}", code="invalid_sampling") from None
    return chains


def free_samplers(chains: list) -> None:
    for chain in chains:
        free_sampler(chain)
    chains.clear()


def _stop_list(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def max_tokens_for(requested: int | None, n_prompt: int, n_ctx: int, cap: int | None = None) -> int:
    """``Llama._create_completion``'s rule: none or <= 0 means up to the context, and never past it;
    never past ``cap`` (``inference.max_tokens_cap``) either."""
    room = n_ctx - n_prompt
    if requested is None or requested <= 0:
        requested = room
    return min(requested, room, cap or room)


@dataclasses.dataclass
class Prepared:
    """A request ready for the engine, and how its answer is to be shaped."""

    request: GenerationRequest
    prompt: str  # the prompt text (``echo``)
    chat: bool
    n: int = 1
    logprobs: int | None = None  # top alternatives per token; None: no logprobs
    tools: ToolPlan | None = None
    include_usage: bool = False
    echo: bool = False
    samplers: list = dataclasses.field(default_factory=list)  # ours until the engine takes them (``handed_over``)

    @property
    def plain(self) -> bool:
        """One choice of text, nothing to parse or add: the streaming fast path."""
        return self.n == 1 and self.logprobs is None and not (self.tools and self.tools.active)

    def handed_over(self) -> None:
        """The engine owns the samplers now (it frees them)."""
        self.samplers = []

    def release(self) -> None:
        """Free the samplers if the engine never took them."""
        free_samplers(self.samplers)


def build_request(llama: llama_cpp.Llama, body: Body, n_ctx: int, rng: random.Random,
                  template: ChatTemplate | None = None, max_tokens_cap: int | None = None) -> Prepared:
    """The engine request for an API body, its samplers, and what shapes its answer.

    Blocking (tokenizing a long prompt, building grammars): call it from a worker thread. Everything
    a client can get wrong is a 400 here, before the request is queued.
    """
    check_fields(body)
    stop = _stop_list(body.stop)
    plan = None
    chat = isinstance(body, CreateChatCompletionRequest)
    if chat:
        if template is None:
            raise bad_request("chat completions are not configured on this server")
        try:
            plan = plan_tools(body.tools, body.tool_choice, body.functions, body.function_call,
                              body.parallel_tool_calls)
            result = template.render([m.model_dump(exclude_none=True) for m in body.messages], plan)
        except (ToolError, PromptError) as exc:
            raise bad_request(str(exc)) from None
        prompt = result.prompt
        refuse_oversized(llama, prompt, n_ctx)
        tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
        stop += result.stop
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        requested = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    else:
        if isinstance(body.prompt, list):  # [] is "" as llama_cpp.server has it (schemathesis found an IndexError)
            prompt = body.prompt[0] if body.prompt else ""
        else:
            prompt = body.prompt or ""
        refuse_oversized(llama, prompt, n_ctx)
        tokens = completion_prompt_tokens(llama, prompt)
        logprobs = body.logprobs
        requested = body.max_tokens
    if len(tokens) >= n_ctx:
        raise bad_request(f"Requested tokens ({len(tokens)}) exceed context window of {n_ctx}",
                          code="context_length_exceeded")
    n = body.n or 1
    sampling = sampling_params(llama, body, rng, plan)
    samplers = build_samplers(llama, sampling, n)
    request = GenerationRequest(prompt_tokens=tokens, stop=stop, sampling=sampling,
                                max_tokens=max_tokens_for(requested, len(tokens), n_ctx, max_tokens_cap),
                                n=n, logprobs=logprobs, samplers=samplers)
    return Prepared(request, prompt, chat, n=n, logprobs=logprobs, tools=plan, samplers=samplers,
                    include_usage=bool(body.stream_options and body.stream_options.include_usage),
                    echo=not chat and body.echo)


TEXT_SLOT = "\x00text\x00"  # stands for a chunk's text while its SSE template is made


class CompletionShape:
    """Builds ``text_completion`` objects and chunks (chat ones for ``chat``) with one id and timestamp
    per request, and their SSE lines."""

    def __init__(self, model: str, chat: bool = False, include_usage: bool = False) -> None:
        self.id = f"cmpl-{uuid.uuid4()}"
        self.created = int(time.time())
        self.model = model
        self.chat = chat
        self.include_usage = include_usage
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
        out["usage"] = usage(n_prompt, n_completion)
        return out

    def sse_text(self, text: str) -> str:
        """The SSE line of a chunk carrying ``text`` (not the first chunk of a chat stream)."""
        return self._text_head + json.dumps(text) + self._text_tail

    def sse(self, text: str, finish_reason: str | None, first: bool) -> str:
        """The SSE lines of any chunk; the first of a chat stream is preceded by its role delta."""
        return "".join(f"data: {json.dumps(c)}\n\n" for c in self._chunks(self.chunk(text, finish_reason), first))

    def _chunks(self, chunk: dict[str, Any], first: bool) -> list[dict[str, Any]]:
        return chat_chunks(chunk, first) if self.chat else [chunk]

    # -- several choices, logprobs, tool calls (``choices.ChoiceStream`` builds the choices) ----------
    def _envelope(self, choices: list[dict[str, Any]], whole: bool = False) -> dict[str, Any]:
        if self.chat:
            kind = "chat.completion" if whole else "chat.completion.chunk"
            return {"id": "chat" + self.id, "object": kind, "created": self.created, "model": self.model,
                    "choices": choices}
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": choices}

    def sse_choice(self, choice: dict[str, Any]) -> str:
        """The SSE line of a chunk carrying one choice's delta (or text)."""
        return f"data: {json.dumps(self._envelope([choice]))}\n\n"

    def sse_usage(self, n_prompt: int, n_completion: int) -> str:
        """``stream_options.include_usage``: the last chunk, with the usage and no choices (as OpenAI's)."""
        return f"data: {json.dumps({**self._envelope([]), 'usage': usage(n_prompt, n_completion)})}\n\n"

    def whole(self, choices: list[dict[str, Any]], n_prompt: int, n_completion: int) -> dict[str, Any]:
        """A non-streamed answer with these choices."""
        return {**self._envelope(choices, whole=True), "usage": usage(n_prompt, n_completion)}


def usage(n_prompt: int, n_completion: int) -> dict[str, int]:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_completion, "total_tokens": n_prompt + n_completion}


def chat_chunks(chunk: dict[str, Any], first: bool) -> list[dict[str, Any]]:
    """A completion chunk as chat chunks, via llama-cpp-python's own converter (role delta first)."""
    converted = list(llama_chat_format._convert_text_completion_chunks_to_chat(iter([chunk])))
    return converted if first else converted[1:]


def chat_completion(completion: dict[str, Any]) -> dict[str, Any]:
    return llama_chat_format._convert_text_completion_to_chat(completion)


__all__ = ["FIELDS", "CompletionShape", "Prepared", "build_request", "chat_chunks", "chat_completion",
           "check_fields", "completion_prompt_tokens", "max_tokens_for"]

"""The batched service's request bodies: ``llama_cpp.server``'s own types with their real limits.

Fields, names and defaults stay llama-cpp-python's (clients see the same API as on the serial
path) plus the OpenAI fields the batched engine honours (``tools``, ``response_format``
``json_schema``, ``logprobs`` / ``top_logprobs``, ``n``, ``stream_options``,
``max_completion_tokens``, ``parallel_tool_calls``...). Every field says what this server accepts,
so ``/openapi.json`` tells clients and fuzzers the truth and a value out of range is a 400 before
anything is tokenized:

- a field the body does not declare is kept (``extra="allow"``) so that
  ``openai_surface.check_fields`` can refuse it with a 400 *naming it* (or accept it where
  ``openai_surface.FIELDS`` says it changes nothing), instead of pydantic's silent drop;
- integers that reach llama.cpp as C ``int`` (``max_tokens``, ``top_k``) fit 32 bits;
- lists and strings whose size costs work per generated token (``stop`` strings are searched at
  every token, ``logit_bias`` entries become a sampler, a ``grammar`` is parsed, tools become a
  grammar) are bounded;
- logit biases lie within OpenAI's ±100 (a huge bias turns logits into inf/NaN inside the sampler);
- messages, tools and ``response_format`` are plain JSON here: their meaning (roles, parts, schemas)
  is checked by ``chat_prompt``, ``tool_calls`` and ``schema_grammar``, which answer a 400 that says
  which message or tool is wrong (pydantic's union errors name none).

Prompt length is bounded by the body limit (``guard.max_body_bytes``, one byte at least per
character) and, in tokens, by the context: a prompt of ``n_ctx`` tokens or more is a 400
(``context_length_exceeded``). Token ids and the grammar itself are checked against the loaded
model in ``openai_surface.build_request``, off the event loop, before the request is queued.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest, TokenizeInputRequest
from pydantic import BaseModel, ConfigDict, Field

C_INT_MAX = 2**31 - 1
INT64 = 2**63
MAX_PROMPT_CHARS = 1024 * 1024
MAX_MESSAGES = 1024
MAX_STOPS, MAX_STOP_CHARS = 16, 256
MAX_LOGIT_BIAS = 1024
MAX_GRAMMAR_CHARS = 64 * 1024
MAX_NAME_CHARS = 256
MAX_CHOICES = 16  # n; the engine refuses more than its slots
MAX_TOP_LOGPROBS = 20  # OpenAI's limit for chat (5 for completions)
MAX_TOOLS = 128

Prompt = Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
StopString = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
Stop = StopString | Annotated[list[StopString], Field(max_length=MAX_STOPS)] | None
LogitBias = Annotated[dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]], Field(max_length=MAX_LOGIT_BIAS)]

_max_tokens = "most tokens to generate; none or 0: up to the context (and inference.max_tokens_cap)"
_top_k = Field(40, ge=0, le=C_INT_MAX, description="sample among the K most probable tokens (0: all)")
_seed = Field(None, ge=-INT64, le=INT64 - 1, description="sampling seed (default: from the server's seed)")
_grammar = Field(None, max_length=MAX_GRAMMAR_CHARS,
                 description="a GBNF grammar the output must follow; one that does not parse is a 400")
_stop = Field(None, description=f"up to {MAX_STOPS} strings of up to {MAX_STOP_CHARS} characters")
_bias = Field(None, description=f"up to {MAX_LOGIT_BIAS} token ids (or texts) to bias, each by -100..100")
_name = Field(None, max_length=MAX_NAME_CHARS)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = Field(False, description="a last chunk with the usage and no choices")
    include_obfuscation: Literal[False] = Field(False, description="not supported by this server")


class _Bounded(BaseModel):
    """The fields both completion requests share, with their limits."""

    model_config = ConfigDict(extra="allow")

    model: str | None = _name
    min_tokens: int = Field(0, ge=0, le=0, description="not supported by the batched engine")
    stop: Stop = _stop
    logit_bias: LogitBias | None = _bias
    seed: int | None = _seed
    n: int | None = Field(1, ge=1, le=MAX_CHOICES, description="choices, sharing one prefill of the prompt "
                          "(at most the server's slots)")
    user: str | None = _name
    top_k: int = _top_k
    grammar: str | None = _grammar
    stream_options: StreamOptions | None = Field(None, description="with stream: include_usage")


class Message(BaseModel):
    """One chat message; ``chat_prompt`` checks what its role and content mean for the model's format."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class CompletionRequest(_Bounded, CreateCompletionRequest):
    """``POST /v1/completions``."""

    prompt: Prompt | Annotated[list[Prompt], Field(max_length=1)] = Field(
        "", description="the prompt (one per request); fewer tokens than the model's context")
    suffix: None = Field(None, description="not supported by this server")
    max_tokens: int | None = Field(16, ge=0, le=C_INT_MAX, description=_max_tokens)
    logprobs: int | None = Field(None, ge=0, le=5, description="the log probability of each generated token "
                                 "and of up to 5 most likely ones at its place")
    best_of: int | None = Field(None, ge=1, le=MAX_CHOICES, description="only equal to n (no server-side ranking)")


class ChatCompletionRequest(_Bounded, CreateChatCompletionRequest):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(
        default_factory=list, max_length=MAX_MESSAGES,
        description=f"the conversation, at most {MAX_MESSAGES} messages; its prompt must have fewer tokens "
                    "than the model's context")
    max_tokens: int | None = Field(None, ge=-C_INT_MAX, le=C_INT_MAX, description=_max_tokens)
    max_completion_tokens: int | None = Field(None, ge=0, le=C_INT_MAX, description="max_tokens by its new name")
    logprobs: bool | None = Field(False, description="the log probability of each generated token")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                     description="with logprobs: that many most likely tokens at each place")
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = Field(
        None, description="functions the model may call (type function, JSON Schema parameters)")
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = Field(
        None, description="auto (default with tools), none, required, or {type: function, function: {name}}")
    parallel_tool_calls: bool | None = Field(None, description="false: at most one call per answer")
    functions: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = Field(
        None, description="the legacy form of tools")
    function_call: Literal["none", "auto"] | dict[str, Any] | None = Field(
        None, description="the legacy form of tool_choice")
    response_format: dict[str, Any] | None = Field(
        None, description="{type: text}, {type: json_object[, schema]} or {type: json_schema, json_schema: "
                          "{name, schema, strict}}: the answer is JSON (matching the schema)")


class TokenizeRequest(TokenizeInputRequest):
    """``POST /extras/tokenize`` and ``/extras/tokenize/count`` (as ``llama_cpp.server`` has them)."""

    model: str | None = _name
    input: Prompt = Field(description="the text to tokenize (as a prompt: special tokens parsed)")


__all__ = ["ChatCompletionRequest", "CompletionRequest", "MAX_PROMPT_CHARS", "TokenizeRequest"]

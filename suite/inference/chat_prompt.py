"""Chat messages to the model's prompt, with nothing dropped on the way.

llama-cpp-python's chat formats drop what they cannot express without a word: ``gemma`` discards
``role: system`` (a debug log line), every format built on ``_map_roles`` drops roles it has no
prefix for (``tool``, ``function``) and renders content given as a list of parts as nothing. A
``ChatTemplate`` puts a request's messages into a shape its format can express, renders them, and
checks that the prompt holds every message:

- ``system`` and ``developer`` messages are joined (in order, blank line between) into one system
  text. A format with a system role gets it there; a format without one (``gemma``: Gemma's own
  template does the same) gets it at the start of the first user turn, followed by a blank line.
- Content given as parts: the text parts, one per line. Any other part (image, audio, file) is a 400.
- Tools: a Jinja template that renders ``tools`` itself and speaks the ``<tool_call>`` syntax gets
  the tools, the assistant turns' ``tool_calls`` and the ``tool`` messages as they are. Any other
  format gets this server's generic format (``tool_calls``): the tools described in the system text,
  earlier calls written back as ``<tool_call>`` blocks, tool results as ``<tool_response>`` blocks
  in user turns (consecutive results in one turn).
- A message whose text does not reach the rendered prompt is a 400 naming its role and the format,
  never a silent drop.

``chat_format`` names a llama-cpp-python format (``gemma``, ``chatml``...), or ``auto``: the GGUF's
own Jinja template (``tokenizer.chat_template``), rendered by llama-cpp-python's
``Jinja2ChatFormatter`` as ``Llama`` itself does. Both inference engines render through this module.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any

from llama_cpp import llama_chat_format

from suite.inference.tool_calls import CALL_OPEN, ToolPlan, render_calls, render_response, tool_instructions

AUTO = "auto"
PART_SEPARATOR = "\n"
SYSTEM_SEPARATOR = "\n\n"
MARK = "qzx{}qzx"  # probe text: no template changes it, no real message contains it


class PromptError(ValueError):
    """The messages cannot be expressed in this model's chat format (a 400)."""


@dataclass
class Rendered:
    prompt: str
    stop: list[str]
    added_special: bool


def chat_formatter(name: str) -> llama_chat_format.ChatFormatter:
    """The formatter registered under ``name`` (e.g. "gemma"), taken from its registered handler."""
    handler = llama_chat_format.get_chat_completion_handler(name)
    formatter = inspect.getclosurevars(handler).nonlocals.get("chat_formatter")
    if formatter is None:
        raise ValueError(f"chat format {name!r} is a custom handler, not a prompt formatter; "
                         "the batched engine supports prompt formatters only")
    return formatter


def gguf_formatter(llama) -> llama_chat_format.Jinja2ChatFormatter:
    """The GGUF's own chat template, as ``Llama.__init__`` builds it for ``chat_format=None``."""
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("chat_format 'auto' needs a GGUF with a chat template (tokenizer.chat_template); "
                         "this one has none: name a llama-cpp-python chat format (e.g. 'gemma') instead")
    eos_id, bos_id = llama.token_eos(), llama.token_bos()
    eos = llama._model.token_get_text(eos_id) if eos_id != -1 else ""
    bos = llama._model.token_get_text(bos_id) if bos_id != -1 else ""
    return llama_chat_format.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos,
                                                 stop_token_ids=[eos_id])


class ChatTemplate:
    """One model's chat format, probed once for what it can express."""

    def __init__(self, formatter: llama_chat_format.ChatFormatter, name: str, source: str | None = None) -> None:
        self.formatter = formatter
        self.name = name
        self.keeps_system = self._keeps([{"role": "system", "content": MARK.format("system")},
                                         {"role": "user", "content": "u"}], MARK.format("system"))
        # a template that lists the tools itself and writes calls the way the parser reads them
        self.native_tools = bool(source) and "tools" in source and CALL_OPEN in source and self._keeps(
            [{"role": "user", "content": "u"},
             {"role": "assistant", "content": "", "tool_calls": [
                 {"id": "c", "type": "function", "function": {"name": MARK.format("call"), "arguments": {}}}]},
             {"role": "tool", "tool_call_id": "c", "content": MARK.format("tool")}], MARK.format("tool"))

    @classmethod
    def load(cls, llama, chat_format: str) -> ChatTemplate:
        """``chat_format``'s template for ``llama`` (``auto``: the GGUF's own)."""
        if chat_format == AUTO:
            formatter = gguf_formatter(llama)
            return cls(formatter, "the GGUF's chat template", formatter.template)
        return cls(chat_formatter(chat_format), chat_format)

    def _keeps(self, messages: list[dict[str, Any]], mark: str) -> bool:
        try:
            return mark in self.formatter(messages=messages).prompt
        except Exception:  # a template that raises on the probe cannot express it either
            return False

    # -- rendering --------------------------------------------------------------------------------
    def render(self, messages: list[dict[str, Any]], plan: ToolPlan | None = None) -> Rendered:
        """The prompt for ``messages`` (and the tools of ``plan``); ``PromptError`` for what it cannot hold."""
        native = self.native_tools
        offered = plan is not None and plan.active
        system: list[str] = []
        turns: list[dict[str, Any]] = []
        origin: list[str] = []  # the role each turn came from, for the error message
        responses_turn = False
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise PromptError(f"messages[{i}] must be an object")
            role = message.get("role")
            text = _text_of(message.get("content"), f"messages[{i}]")
            if role in ("system", "developer"):
                if text:
                    system.append(text)
                continue
            if role == "user":
                turn = {"role": "user", "content": text or ""}
            elif role == "assistant":
                calls = _calls_of(message, f"messages[{i}]")
                if calls and native:
                    turn = {"role": "assistant", "content": text or "", "tool_calls": _template_calls(calls)}
                else:
                    turn = {"role": "assistant", "content": "\n".join(t for t in (text, render_calls(calls)) if t)}
            elif role in ("tool", "function"):
                if native:
                    turn = {"role": "tool", "content": text or "", "tool_call_id": message.get("tool_call_id")}
                else:
                    block = render_response(text or "")
                    if responses_turn:  # consecutive results: one user turn
                        turns[-1]["content"] += "\n" + block
                        continue
                    turn = {"role": "user", "content": block}
            else:
                raise PromptError(f"messages[{i}]: role '{str(role)[:40]}' is not supported")
            responses_turn = role in ("tool", "function") and not native
            turns.append(turn)
            origin.append(role)
        if offered and not native:
            system.append(tool_instructions(plan))
        if system:
            text = SYSTEM_SEPARATOR.join(system)
            if self.keeps_system:
                turns.insert(0, {"role": "system", "content": text})
                origin.insert(0, "system")
            elif turns and turns[0]["role"] == "user":
                turns[0] = {**turns[0], "content": text + SYSTEM_SEPARATOR + turns[0]["content"]}
            else:
                turns.insert(0, {"role": "user", "content": text})
                origin.insert(0, "system")
        kwargs = {"tools": plan.tools} if offered and native else {}
        try:
            result = self.formatter(messages=turns, **kwargs)
        except Exception as exc:  # the model's chat template refused these messages
            raise PromptError(f"messages cannot be formatted for this model: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None
        self._check_kept(result.prompt, turns, origin)
        stop = result.stop
        return Rendered(prompt=result.prompt, stop=[stop] if isinstance(stop, str) else list(stop or []),
                        added_special=result.added_special)

    def _check_kept(self, prompt: str, turns: list[dict[str, Any]], origin: list[str]) -> None:
        for turn, role in zip(turns, origin):
            texts = [turn["content"].strip()] + [c["function"]["name"] for c in turn.get("tool_calls", ())]
            for text in texts:
                if text and text not in prompt:
                    raise PromptError(f"chat format '{self.name}' cannot express a message of role '{role}' "
                                      "(it would be dropped from the prompt)")

    def formatter_keeping_messages(self) -> llama_chat_format.ChatFormatter:
        """A llama-cpp-python formatter that renders through ``render`` (the serial engine's chat handler)."""

        def format_messages(*, messages, **_: Any) -> llama_chat_format.ChatFormatterResponse:
            rendered = self.render(messages)
            return llama_chat_format.ChatFormatterResponse(prompt=rendered.prompt, stop=rendered.stop,
                                                           added_special=rendered.added_special)

        return format_messages


def _text_of(content: Any, where: str) -> str | None:
    """A message's text: a string, or its text parts one per line (other parts are a 400)."""
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise PromptError(f"{where}.content must be a string or a list of parts")
    parts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            if not isinstance(part.get(kind), str):
                raise PromptError(f"{where}.content[{i}].{kind} must be a string")
            parts.append(part[kind])
        else:
            raise PromptError(f"{where}.content[{i}]: parts of type '{str(kind)[:40]}' are not supported by "
                              "this model (text only)")
    return PART_SEPARATOR.join(parts)


def _calls_of(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` (or legacy ``function_call``), checked for their shape."""
    calls = message.get("tool_calls")
    if calls is None and message.get("function_call") is not None:
        if not _is_call(message["function_call"]):
            raise PromptError(f"{where}.function_call must be {{name: string, arguments: JSON string}}")
        return [{"type": "function", "function": message["function_call"]}]
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise PromptError(f"{where}.tool_calls must be a list")
    for j, call in enumerate(calls):
        if not isinstance(call, dict) or not _is_call(call.get("function")):
            raise PromptError(f"{where}.tool_calls[{j}] must be {{type: function, function: {{name: string, "
                              "arguments: JSON string}}")
    return calls


def _is_call(fn: Any) -> bool:
    return isinstance(fn, dict) and isinstance(fn.get("name"), str) and isinstance(fn.get("arguments", ""), (str, dict))


def _template_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``tool_calls`` as chat templates read them: ``arguments`` an object, not a JSON string."""
    out = []
    for call in calls:
        fn = dict(call.get("function") or {})
        if isinstance(fn.get("arguments"), str):
            try:
                fn["arguments"] = json.loads(fn["arguments"])
            except json.JSONDecodeError:
                pass
        out.append({"id": call.get("id"), "type": "function", "function": fn})
    return out


__all__ = ["AUTO", "ChatTemplate", "PromptError", "Rendered", "chat_formatter", "gguf_formatter"]

"""The engine's events as OpenAI choices: several per request (``n``), with logprobs and tool calls.

The plain case (one choice of text, nothing to parse) streams through ``openai_surface.CompletionShape``'s
per-token template; everything else goes through a ``ChoiceStream`` per choice, which turns that
choice's events into chunk choices as they arrive and, at the end, into its whole choice:

- **logprobs** in the shapes OpenAI defines: chat ``{"content": [{token, logprob, bytes,
  top_logprobs}], "refusal": null}``, completions ``{tokens, token_logprobs, top_logprobs,
  text_offset}``. A token that is part of a UTF-8 character is shown with U+FFFD; ``bytes`` has its
  real bytes. In a stream each chunk carries the logprobs of the tokens whose text it brings.
- **tool calls** parsed by ``tool_calls.CallScanner``: ``message.tool_calls`` (``function_call``
  for the legacy ``functions`` API) and ``finish_reason`` ``tool_calls`` when the answer ends after
  calls; in a stream, ``tool_calls`` deltas (an entry with ``id``, ``type`` and ``name`` when a call
  starts, then ``arguments`` as they are written, each with the call's ``index``).
"""

from __future__ import annotations

from typing import Any

from suite.inference.engine import Event
from suite.inference.sampling import token_piece
from suite.inference.tool_calls import CallScanner


class TokenText:
    """Token id -> its bytes and its text, cached (the vocabulary's pieces do not change)."""

    def __init__(self, vocab) -> None:
        self.vocab = vocab
        self._pieces: dict[int, bytes] = {}

    def piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = token_piece(self.vocab, token)
        return piece

    def entry(self, token: int, logprob: float) -> dict[str, Any]:
        piece = self.piece(token)
        return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}


class ChoiceStream:
    """One choice of a chat or text completion, fed its events in order."""

    def __init__(self, index: int, *, chat: bool, tokens: TokenText, logprobs: bool = False,
                 tools: bool = False, legacy: bool = False, echo: str = "") -> None:
        self.index = index
        self.chat = chat
        self.tokens = tokens
        self.logprobs_on = logprobs
        self.scanner = CallScanner() if tools else None
        self.legacy = legacy
        self.echo = echo
        self.text: list[str] = []
        self.logprobs: list[Any] = []
        self.offset = len(echo)  # text_offset of the next token (completions)
        self.finish_reason: str | None = None
        self.completion_tokens = 0
        self.started = False

    # -- streaming --------------------------------------------------------------------------------
    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The chunk choices for ``event`` (its final one too when it is the last)."""
        out = self._opening()
        logprobs = event.logprobs if self.logprobs_on else None
        if logprobs:
            self.logprobs.extend(logprobs)
        if event.text or logprobs:
            self.text.append(event.text)
            out += self._piece(event.text, logprobs)
        if event.final:
            out += self._close(event)
        return out

    def _opening(self) -> list[dict[str, Any]]:
        if self.started:
            return []
        self.started = True
        if self.chat:
            return [{"index": self.index, "delta": {"role": "assistant"}, "logprobs": None, "finish_reason": None}]
        if self.echo:
            return [self._text_choice(self.echo, None)]
        return []

    def _piece(self, text: str, logprobs) -> list[dict[str, Any]]:
        if not self.chat:
            return [self._text_choice(text, logprobs)]
        delta = self._delta(self.scanner.feed(text)) if self.scanner else ({"content": text} if text else {})
        if not delta and not logprobs:
            return []
        return [{"index": self.index, "delta": delta, "logprobs": self._chat_logprobs(logprobs),
                 "finish_reason": None}]

    def _close(self, event: Event) -> list[dict[str, Any]]:
        self.completion_tokens = event.completion_tokens
        out = []
        if self.scanner is not None:
            rest = self._delta(self.scanner.finish())
            if rest:
                out.append({"index": self.index, "delta": rest, "logprobs": None, "finish_reason": None})
        self.finish_reason = self._reason(event.finish_reason)
        if self.chat:
            out.append({"index": self.index, "delta": {}, "logprobs": None, "finish_reason": self.finish_reason})
        else:
            out.append({"text": "", "index": self.index, "logprobs": None, "finish_reason": self.finish_reason})
        return out

    def _reason(self, reason: str | None) -> str | None:
        if reason == "stop" and self.scanner is not None and self.scanner.calls:
            return "function_call" if self.legacy else "tool_calls"
        return reason

    def _delta(self, deltas: list[tuple]) -> dict[str, Any]:
        content = "".join(d[1] for d in deltas if d[0] == "content")
        delta: dict[str, Any] = {"content": content} if content else {}
        calls: list[dict[str, Any]] = []
        for d in deltas:
            if d[0] == "call":
                call = self.scanner.calls[d[1]]
                calls.append({"index": d[1], "id": call.id, "type": "function",
                              "function": {"name": call.name, "arguments": ""}})
            elif d[0] == "args":
                if calls and calls[-1]["index"] == d[1]:
                    calls[-1]["function"]["arguments"] += d[2]
                else:
                    calls.append({"index": d[1], "function": {"arguments": d[2]}})
        if calls and self.legacy:
            first = [c["function"] for c in calls if c["index"] == 0]
            if first:
                delta["function_call"] = {k: v for f in first for k, v in f.items()}
        elif calls:
            delta["tool_calls"] = calls
        return delta

    def _text_choice(self, text: str, logprobs) -> dict[str, Any]:
        return {"text": text, "index": self.index, "logprobs": self._text_logprobs(logprobs), "finish_reason": None}

    # -- logprobs ---------------------------------------------------------------------------------
    def _chat_logprobs(self, items, always: bool = False) -> dict[str, Any] | None:
        if not items and not always:
            return None
        return {"content": [{**self.tokens.entry(i.token, i.logprob),
                             "top_logprobs": [self.tokens.entry(t, lp) for t, lp in i.top]} for i in items or ()],
                "refusal": None}

    def _text_logprobs(self, items) -> dict[str, Any] | None:
        if not items:
            return None
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for item in items:
            text = self.tokens.entry(item.token, item.logprob)["token"]
            out["tokens"].append(text)
            out["token_logprobs"].append(item.logprob)
            top: dict[str, float] = {}
            for token, lp in item.top:
                top.setdefault(self.tokens.entry(token, lp)["token"], lp)
            out["top_logprobs"].append(top)
            out["text_offset"].append(self.offset)
            self.offset += len(text)
        return out

    # -- the whole choice -------------------------------------------------------------------------
    def choice(self) -> dict[str, Any]:
        """The choice of a non-streamed answer (after every event was fed)."""
        text = "".join(self.text)
        if not self.chat:
            self.offset = len(self.echo)
            return {"text": self.echo + text, "index": self.index,
                    "logprobs": self._text_logprobs(self.logprobs) if self.logprobs_on else None,
                    "finish_reason": self.finish_reason}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        scanner = self.scanner
        if scanner is not None:
            content = "".join(scanner.content)
            message["content"] = content if content or not scanner.calls else None
            calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": "".join(c.arguments)}}
                     for c in scanner.calls]
            if calls and self.legacy:
                message["function_call"] = calls[0]["function"]
            elif calls:
                message["tool_calls"] = calls
        return {"index": self.index, "message": message,
                "logprobs": self._chat_logprobs(self.logprobs, always=True) if self.logprobs_on else None,
                "finish_reason": self.finish_reason}


__all__ = ["ChoiceStream", "TokenText"]

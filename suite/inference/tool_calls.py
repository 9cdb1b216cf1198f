"""Tool calling on the batched engine: what the model is told, what it may write, what the client gets.

**The call syntax** is the one Hermes-style templates (Qwen 2.5/3, Hermes 2/3 and many others) teach
their models, and this server's generic format for every chat format without a tool-aware template
(the bundled Gemma GGUF has no template at all)::

    <tool_call>
    {"name": "read_file", "arguments": {"path": "docs/hello.txt"}}
    </tool_call>

one block per call, several blocks for parallel calls. In the generic format the tools are listed in
the system text (``tool_instructions``), an earlier assistant turn's calls are written back as such
blocks and each ``role: "tool"`` result goes back in a user turn as
``<tool_response>\\n{content}\\n</tool_response>``.

**The grammar** (``call_grammar``) is built from the tools' JSON Schemas (``schema_grammar``): a call
names one of the offered tools and its ``arguments`` match that tool's ``parameters``. With
``tool_choice`` ``required`` or a named function it applies from the first token; with ``auto`` it
is lazy: llama.cpp's ``llama_sampler_init_grammar_lazy_patterns`` leaves the output free until the
text so far ends with ``<tool_call>`` (``TRIGGER``), then constrains the rest. The trigger is matched
at the *end* of the text so that what llama.cpp hands the grammar is exactly the opening tag (plus
whitespace), which the grammar accepts: a token that closed the tag and went on with other text is
never fed to it (llama.cpp aborts the process on text its grammar refuses). That text stays
unconstrained and is parsed as best it can be. The trigger search scans the text generated so far at
every token (llama.cpp's ``std::regex``): 0.7 ms a token on average over 2,000 generated tokens on
this CPU (llama-server's unanchored ``[\\s\\S]*?(<tool_call>)[\\s\\S]*`` took 17 s over 361 tokens).

**The parse** (``CallScanner``) turns the text into content and ``tool_calls`` (ids, names, the
arguments as the JSON text the model wrote), incrementally, so a stream carries ``tool_calls``
deltas as the arguments are written.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from suite.inference.schema_grammar import Grammar, SchemaError, check_schema

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
TRIGGER = r"(<tool_call>[ \t\r\n]{0,32})$"
NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_TOOLS = 128
HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
MAX_HEADER_CHARS = 512
EMPTY_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


class ToolError(ValueError):
    """The request's tools or tool choice are not usable (the message names the field)."""


@dataclass
class ToolPlan:
    """What a request's ``tools`` / ``tool_choice`` (or legacy ``functions`` / ``function_call``) mean."""

    tools: list[dict[str, Any]]  # OpenAI tool objects, {"type": "function", "function": {...}}
    choice: str  # "auto", "required", "none" or "function" (one named function)
    forced: str | None = None  # the named function
    parallel: bool = True
    legacy: bool = False  # answered as ``function_call`` (the ``functions`` API)
    grammar: str | None = None
    lazy: bool = False
    offered: list[dict[str, Any]] = field(default_factory=list)  # the tools a call may name

    @property
    def active(self) -> bool:
        """Whether the model is offered the tools (``none`` renders none and parses none)."""
        return self.choice != "none"


def plan_tools(tools: list | None, tool_choice: Any, functions: list | None, function_call: Any,
               parallel: bool | None) -> ToolPlan | None:
    """The request's tool plan, checked; None when it has no tools."""
    legacy = bool(functions) or function_call is not None
    if legacy and (tools or tool_choice is not None):
        raise ToolError("use either tools / tool_choice or the legacy functions / function_call, not both")
    if legacy:
        tools = [{"type": "function", "function": f} for f in (functions or [])]
        tool_choice = _legacy_choice(function_call)
        field_name = "functions"
    else:
        field_name = "tools"
    if not tools:
        if tool_choice not in (None, "none", "auto"):
            raise ToolError(f"tool_choice {json.dumps(tool_choice)[:80]} needs {field_name}")
        return None
    if len(tools) > MAX_TOOLS:
        raise ToolError(f"at most {MAX_TOOLS} {field_name} per request (got {len(tools)})")
    names: set[str] = set()
    checked = []
    for i, tool in enumerate(tools):
        checked.append(_check_tool(tool, f"{field_name}[{i}]", names))
    choice, forced = _choice(tool_choice, names, legacy)
    # a named function is called once; the legacy API has one function_call per answer
    plan = ToolPlan(checked, choice, forced, parallel=parallel is not False and not legacy and forced is None,
                    legacy=legacy)
    if plan.active:
        plan.offered = [t for t in checked if forced is None or t["function"]["name"] == forced]
        plan.grammar = call_grammar(plan.offered, plan.parallel)
        plan.lazy = choice == "auto"
    return plan


def _legacy_choice(function_call: Any) -> Any:
    if isinstance(function_call, dict):
        return {"type": "function", "function": {"name": function_call.get("name")}}
    return function_call


def _check_tool(tool: Any, where: str, names: set[str]) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function":
        raise ToolError(f"{where}: only tools of type 'function' are supported")
    fn = tool.get("function")
    if not isinstance(fn, dict):
        raise ToolError(f"{where}.function must be an object")
    name = fn.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ToolError(f"{where}.function.name must be 1-64 letters, digits, '_' or '-'")
    if name in names:
        raise ToolError(f"{where}: two tools are named '{name}'")
    names.add(name)
    params = fn.get("parameters")
    if params is None:
        params = EMPTY_PARAMETERS
    try:
        check_schema(params, bool(fn.get("strict")), f"{where}.function.parameters")
    except SchemaError as exc:
        raise ToolError(str(exc)) from None
    description = fn.get("description")
    if description is not None and not isinstance(description, str):
        raise ToolError(f"{where}.function.description must be a string")
    out = {"name": name, **({"description": description} if description else {}), "parameters": params}
    return {"type": "function", "function": out}


def _choice(tool_choice: Any, names: set[str], legacy: bool) -> tuple[str, str | None]:
    field_name = "function_call" if legacy else "tool_choice"
    if tool_choice is None:
        return "auto", None
    if tool_choice in ("auto", "none", "required"):
        return tool_choice, None
    if isinstance(tool_choice, dict) and tool_choice.get("type", "function") == "function":
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise ToolError(f"{field_name} must name its function: {{type: function, function: {{name: ...}}}}")
        if name not in names:
            raise ToolError(f"{field_name} names '{str(name)[:64]}', which is not among the tools offered")
        return "function", name
    raise ToolError(f"{field_name} must be 'auto', 'none', 'required' or a named function "
                    f"(got {json.dumps(tool_choice)[:80]})")


def call_grammar(tools: list[dict[str, Any]], parallel: bool, answer: dict[str, Any] | None = None) -> str:
    """GBNF for one (or, ``parallel``, several) ``<tool_call>`` blocks calling ``tools``; with an
    ``answer`` schema, either those or a JSON answer matching it."""
    grammar = Grammar(prop_order=["name", "arguments"])
    defs: dict[str, Any] = {}
    calls = []
    for i, tool in enumerate(tools):
        fn = tool["function"]
        calls.append({"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                      "properties": {"name": {"const": fn["name"]},
                                     "arguments": _hoist_defs(fn["parameters"], f"t{i}-", defs)}})
    schema: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if defs:
        schema = {**schema, "$defs": defs}
    try:
        grammar.schema_rule(schema, "tc-call")
        # whitespace as the trigger lets it through (at most 32); nothing after the last call but the
        # end of the answer (a small model would otherwise write newlines up to max_tokens)
        grammar.rule("tc-ws", "[ \\t\\r\\n]{0,32}")
        grammar.rule("tc-block", f'"{CALL_OPEN}" tc-ws tc-call tc-ws "{CALL_CLOSE}"')
        calls = "tc-block (tc-ws tc-block)*" if parallel else "tc-block"
        if answer is not None:
            grammar.schema_rule(answer, "answer")
            calls = f"{calls} | answer"
        grammar.rule("root", calls)
        return grammar.text()
    except SchemaError as exc:
        raise ToolError(f"tools: {exc}") from None


def _hoist_defs(params: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """``params`` with its ``$defs`` / ``definitions`` moved into ``defs`` under prefixed names (and
    its local ``$ref``s pointing there), so several tools' definitions of one name never meet."""

    def rename(node: Any) -> Any:
        if isinstance(node, list):
            return [rename(x) for x in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                match = re.match(r"^#/(\$defs|definitions)/([^/]+)(.*)$", value)
                value = f"#/$defs/{prefix}{match.group(2)}{match.group(3)}" if match else value
            out[key] = rename(value)
        return out

    params = rename(params)
    for key in ("$defs", "definitions"):
        found = params.pop(key, None)
        for name, sub in (found.items() if isinstance(found, dict) else ()):
            defs[f"{prefix}{name}"] = sub
    return params


def tool_instructions(plan: ToolPlan) -> str:
    """The generic format's description of the tools, for the system text."""
    listed = "\n".join(json.dumps(t["function"], ensure_ascii=False) for t in plan.offered)
    many = "one block per call, " if plan.parallel else ""
    return ("You can call these functions (JSON Schema of their arguments):\n"
            f"{listed}\n"
            f"To call a function, write {CALL_OPEN}, then a JSON object with its \"name\" and its \"arguments\", "
            f"then {CALL_CLOSE} ({many}nothing after the calls). Results come back in {RESPONSE_OPEN} blocks.")


def render_calls(calls: list[dict[str, Any]]) -> str:
    """An assistant turn's ``tool_calls`` written back in the call syntax."""
    blocks = []
    for call in calls:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        text = args if isinstance(args, str) else json.dumps(args if args is not None else {}, ensure_ascii=False)
        blocks.append(f'{CALL_OPEN}\n{{"name": {json.dumps(fn.get("name", ""))}, "arguments": {text}}}\n'
                      f"{CALL_CLOSE}")
    return "\n".join(blocks)


def render_response(content: str) -> str:
    return f"{RESPONSE_OPEN}\n{content}\n{RESPONSE_CLOSE}"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class Call:
    id: str
    name: str
    arguments: list[str] = field(default_factory=list)


# A scanner delta: ("content", text) | ("call", index) | ("args", index, text)
Delta = tuple


class CallScanner:
    """Generated text -> content and tool calls, incrementally (``feed`` per piece, ``finish`` at the end).

    Content is released as it comes, except text that could be the start of ``<tool_call>`` and
    whitespace (around calls it is layout, not an answer). A block is announced as a call once its
    name is read (``{"name": "...", "arguments":`` - the order the grammar writes); its arguments
    follow as they are written, and end where their JSON value ends. A block that does not read that
    way (possible only where the grammar did not apply) is parsed whole at ``</tool_call>``, and kept
    as content if it is not a call.
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.content: list[str] = []
        self._state = "text"
        self._buf = ""
        self._held_ws = ""
        self._gap = ""
        self._value: _ValueEnd | None = None

    def feed(self, text: str) -> list[Delta]:
        out: list[Delta] = []
        self._buf += text
        progress = True
        while progress:
            progress = getattr(self, f"_{self._state}")(out)
        return out

    def finish(self) -> list[Delta]:
        """Whatever is still held: text as content, an unfinished block as content unless announced."""
        out: list[Delta] = []
        if self._state == "text":
            rest = self._held_ws + self._buf
            if rest.strip() or not self.calls:
                self._emit_text(rest, out, hold=False)
        elif self._state in ("head", "raw"):
            self._emit_text(self._gap + CALL_OPEN + self._buf, out, hold=False)
        self._buf = self._held_ws = ""
        return out

    # -- states: each consumes what it can and says whether the next state should run ----------------
    def _text(self, out: list[Delta]) -> bool:
        i = self._buf.find(CALL_OPEN)
        if i >= 0:
            before, self._buf = self._buf[:i], self._buf[i + len(CALL_OPEN):]
            lead = self._held_ws + before
            text = lead.rstrip()
            self._gap = lead[len(text):]  # layout before a call; text again if the block is not one
            self._emit_text(text, out, hold=False)
            self._state = "head"
            return True
        keep = _partial_suffix(self._buf, CALL_OPEN)
        ready, self._buf = self._buf[:len(self._buf) - keep], self._buf[len(self._buf) - keep:]
        self._emit_text(self._held_ws + ready, out, hold=True)
        return False

    def _head(self, out: list[Delta]) -> bool:
        match = HEADER.match(self._buf)
        if match:
            try:
                name = json.loads(f'"{match.group(1)}"')
            except json.JSONDecodeError:
                name = match.group(1)
            self.calls.append(Call(new_call_id(), name))
            out.append(("call", len(self.calls) - 1))
            self._buf = self._buf[match.end():]
            self._value = _ValueEnd()
            self._state = "args"
            return True
        if CALL_CLOSE in self._buf or len(self._buf) > MAX_HEADER_CHARS:
            self._state = "raw"
            return True
        return False

    def _args(self, out: list[Delta]) -> bool:
        if not self._value.started:
            self._buf = self._buf.lstrip()  # the space before the value is layout
        end = self._value.scan(self._buf)
        piece = self._buf if end is None else self._buf[:end]
        if piece:
            self.calls[-1].arguments.append(piece)
            out.append(("args", len(self.calls) - 1, piece))
        self._buf = "" if end is None else self._buf[end:]
        if end is None:
            return False
        self._state = "tail"
        return True

    def _tail(self, out: list[Delta]) -> bool:
        i = self._buf.find(CALL_CLOSE)
        if i < 0:
            return False
        self._buf = self._buf[i + len(CALL_CLOSE):]
        self._state = "text"
        return True

    def _raw(self, out: list[Delta]) -> bool:
        i = self._buf.find(CALL_CLOSE)
        if i < 0:
            return False
        block, self._buf = self._buf[:i], self._buf[i + len(CALL_CLOSE):]
        self._state = "text"
        try:
            obj = json.loads(block, strict=False)
        except json.JSONDecodeError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("name"), str) and "arguments" in obj:
            args = obj["arguments"]
            self.calls.append(Call(new_call_id(), obj["name"]))
            out.append(("call", len(self.calls) - 1))
            text = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            self.calls[-1].arguments.append(text)
            out.append(("args", len(self.calls) - 1, text))
        else:
            self._emit_text(self._gap + CALL_OPEN + block + CALL_CLOSE, out, hold=True)
        return True

    def _emit_text(self, text: str, out: list[Delta], hold: bool) -> None:
        """Release ``text`` as content; with ``hold``, trailing whitespace waits for what follows it."""
        if hold:
            stripped = text.rstrip()
            text, self._held_ws = stripped, text[len(stripped):]
        else:
            self._held_ws = ""
        if text:
            self.content.append(text)
            out.append(("content", text))


class _ValueEnd:
    """Finds where one JSON value ends in text that arrives in pieces."""

    def __init__(self) -> None:
        self.started = False
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.scalar = False

    def scan(self, text: str) -> int | None:
        """The index just past the value's end in ``text`` (this piece), or None if it goes on."""
        for i, ch in enumerate(text):
            if not self.started:
                if ch.isspace():
                    continue
                self.started = True
                if ch in "{[":
                    self.depth = 1
                elif ch == '"':
                    self.in_string = True
                else:
                    self.scalar = True
                continue
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
                    if self.depth == 0:
                        return i + 1
                continue
            if self.scalar:
                if ch in ",}] \t\r\n":
                    return i
                continue
            if ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return i + 1
        return None


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


__all__ = ["CALL_CLOSE", "CALL_OPEN", "CallScanner", "ToolError", "ToolPlan", "TRIGGER", "call_grammar",
           "new_call_id", "plan_tools", "render_calls", "render_response", "tool_instructions"]

"""JSON Schemas (``response_format`` ``json_schema``, tools' ``parameters``) turned into GBNF grammars.

The conversion is llama.cpp's JSON-schema-to-grammar converter as llama-cpp-python ships it
(``llama_grammar.SchemaConverter``); this module puts a boundary around it:

- **What the grammar enforces.** Types, ``properties`` / ``required`` / ``additionalProperties``,
  ``items`` / ``prefixItems`` / ``minItems`` / ``maxItems``, ``enum``, ``const``, ``anyOf`` /
  ``oneOf`` (as a union), ``allOf`` of objects, ``$ref`` / ``$defs``, ``pattern``, ``minLength`` /
  ``maxLength`` and the string formats ``date``, ``time``, ``date-time`` and ``uuid``. Keywords that
  only annotate (``title``, ``description``, ``default``, ``examples``...) are fine anywhere.
  Anything else (``minimum``, ``multipleOf``, ``not``, ``if``, ``uniqueItems``, other formats...)
  cannot be enforced: with ``strict: true`` the schema is refused with a 400 naming the keyword and
  where it is, so a strict answer always validates; without it the grammar enforces the rest (the
  answer is still JSON, OpenAI's non-strict reading).
- **JSON that every parser reads.** The converter's string rule lets raw control characters
  (a newline) into strings, which ``json.loads`` refuses; here strings exclude them (escapes
  ``\\n`` etc. stay allowed).
- **Bounded work.** Repetition bounds (``minItems`` ... ``maxLength``, ``{m,n}`` in patterns) expand
  into grammar text linearly (the converter nests one optional group per item), so each is at most
  ``MAX_REPEAT``; the grammar as a whole is at most ``MAX_GRAMMAR_CHARS``. A schema the converter
  cannot read is a 400, never a 500.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llama_cpp.llama_grammar import SchemaConverter

MAX_REPEAT = 1000
MAX_GRAMMAR_CHARS = 256 * 1024
# JSON string characters: anything but a quote, a backslash or a control character; escapes as JSON has them
JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'

ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
               "readOnly", "writeOnly", "$anchor"}
ENFORCED = {"type", "properties", "required", "additionalProperties", "items", "prefixItems", "minItems",
            "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "pattern",
            "minLength", "maxLength", "format"}
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
SCHEMA_CHILDREN = ("items", "additionalProperties")
SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
SCHEMA_MAPS = ("properties", "$defs", "definitions")
REPEATS = ("minItems", "maxItems", "minLength", "maxLength")
PATTERN_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


class SchemaError(ValueError):
    """The schema cannot become a grammar (the message says where and why)."""


def check_schema(schema: Any, strict: bool, where: str = "schema") -> None:
    """Raise ``SchemaError`` for a schema that is not an object, whose repetition bounds are too
    large, or (``strict``) that uses a keyword the grammar cannot enforce."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where} must be a JSON object")
    stack: list[tuple[dict, str]] = [(schema, where)]
    while stack:
        node, path = stack.pop()
        for key, value in node.items():
            here = f"{path}.{key}"
            if key in REPEATS and not (isinstance(value, int) and 0 <= value <= MAX_REPEAT):
                raise SchemaError(f"{here} must be an integer from 0 to {MAX_REPEAT} (got {str(value)[:40]})")
            if key == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
                raise SchemaError(f"{here}: only local references (#/...) are supported, not {str(value)[:80]}")
            if key == "pattern" and isinstance(value, str):
                for low, high in PATTERN_REPEAT.findall(value):
                    if max(int(low), int(high or 0)) > MAX_REPEAT:
                        raise SchemaError(f"{here} repeats more than {MAX_REPEAT} times")
            if strict and key not in ENFORCED and key not in ANNOTATIONS:
                raise SchemaError(f"{path}: keyword '{key}' cannot be enforced by a grammar on this server "
                                  "(drop it or set strict to false)")
            if strict and key == "format" and value not in FORMATS:
                raise SchemaError(f"{path}: format '{str(value)[:40]}' cannot be enforced by a grammar on "
                                  f"this server (supported: {', '.join(sorted(FORMATS))})")
            if key in SCHEMA_CHILDREN and isinstance(value, dict):
                stack.append((value, here))
            elif key in SCHEMA_LISTS and isinstance(value, list):
                stack.extend((v, f"{here}[{i}]") for i, v in enumerate(value) if isinstance(v, dict))
            elif key in SCHEMA_MAPS and isinstance(value, dict):
                stack.extend((v, f"{here}.{k}") for k, v in value.items() if isinstance(v, dict))


class Grammar:
    """Rules from one or more schemas, plus hand-written rules, as one GBNF text."""

    def __init__(self, prop_order: list[str] | None = None) -> None:
        self._converter = SchemaConverter(prop_order={k: i for i, k in enumerate(prop_order or [])},
                                          allow_fetch=False, dotall=False, raw_pattern=False)
        self._extra: dict[str, str] = {}

    def schema_rule(self, schema: dict[str, Any], name: str) -> str:
        """Add the rules matching ``schema`` (checked with ``check_schema`` first) as rule ``name``
        ("" for ``root``); returns the rule's name."""
        conv = self._converter
        try:
            resolved = conv.resolve_refs(json.loads(json.dumps(schema)), "request")
            return conv.visit(resolved, name)
        except RecursionError:
            raise SchemaError("schema is nested too deeply") from None
        except Exception as exc:  # the converter asserts / raises KeyError on what it cannot read
            raise SchemaError(f"schema cannot be converted to a grammar: {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None

    def rule(self, name: str, body: str) -> None:
        self._extra[name] = body

    def text(self) -> str:
        rules = dict(self._converter._rules)  # the converter keeps its rules there
        if "char" in rules:
            rules["char"] = JSON_CHAR
        rules.update(self._extra)
        out = "\n".join(f"{name} ::= {body}" for name, body in sorted(rules.items()))
        if len(out) > MAX_GRAMMAR_CHARS:
            raise SchemaError(f"the grammar for this schema is {len(out)} characters; at most "
                              f"{MAX_GRAMMAR_CHARS} are allowed (simplify the schema)")
        return out


def schema_to_grammar(schema: dict[str, Any], strict: bool = False) -> str:
    """A GBNF grammar whose ``root`` is one JSON value matching ``schema``."""
    check_schema(schema, strict)
    grammar = Grammar()
    grammar.schema_rule(schema, "")  # the converter's name for its top rule: "root"
    return grammar.text()


__all__ = ["Grammar", "MAX_REPEAT", "SchemaError", "check_schema", "schema_to_grammar"]

"""Typed runbook parameters: read from each notebook's ``parameters`` cell, validated before a kernel starts."""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import ParameterError

# Injected by ``harness run`` into every runbook; not settable with -p.
RESERVED = frozenset({"run_dir", "run_id"})


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true/false")


def _list(text: str) -> list:
    text = text.strip()
    if text.startswith("["):
        value = json.loads(text)
        if not isinstance(value, list):
            raise ValueError("expected a JSON list")
        return value
    return [part.strip() for part in text.split(",") if part.strip()]


def _dict(text: str) -> dict:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


CONVERTERS: dict[str, Callable[[str], Any]] = {
    "str": str, "int": int, "float": float, "bool": _bool,
    "list": _list, "list[str]": _list, "list[int]": lambda t: [int(x) for x in _list(t)],
    "list[float]": lambda t: [float(x) for x in _list(t)], "dict": _dict, "dict[str, str]": _dict,
}


@dataclass(frozen=True)
class Parameter:
    name: str
    type_name: str
    default: str  # as written in the parameters cell
    help: str = ""

    @property
    def secret(self) -> bool:
        """Named like a secret, or marked ``(secret)`` in its comment (see ``harness.redact``)."""
        from harness.redact import is_secret

        return is_secret(self.name, self.help)

    def default_value(self) -> Any:
        """The default of the parameters cell as a Python value (None when it is not a literal)."""
        try:
            return ast.literal_eval(self.default)
        except (ValueError, SyntaxError):
            return None

    def convert(self, raw: Any, notebook: str) -> Any:
        if not isinstance(raw, str):
            return raw
        conv = CONVERTERS.get(self.type_name.replace(" ", "").replace(",", ", "), None)
        if conv is None:
            raise ParameterError(
                f"parameter '{self.name}' of {notebook} has an unsupported type '{self.type_name}'",
                notebook=notebook, parameter=self.name)
        try:
            return conv(raw)
        except (ValueError, json.JSONDecodeError) as exc:
            raise ParameterError(
                f"parameter '{self.name}' of {notebook} expects {self.type_name}, got {raw!r} ({exc})",
                notebook=notebook, parameter=self.name) from None


def declared_parameters(notebook: Path) -> dict[str, Parameter]:
    """The typed parameters of a notebook's ``parameters`` cell (papermill's own inspection)."""
    import papermill

    found = papermill.inspect_notebook(str(notebook))
    params = {}
    for name, info in found.items():
        type_name = info.get("inferred_type_name") or "None"
        if type_name == "None":
            raise ParameterError(f"parameter '{name}' of {notebook.name} has no type annotation; "
                                 f"write it as `{name}: int = ...`", notebook=notebook.name, parameter=name)
        params[name] = Parameter(name, type_name, str(info.get("default")), info.get("help") or "")
    for line in _parameter_lines(notebook):
        match = _ASSIGNMENT.match(line)
        if match and match.group(1) not in params:
            raise ParameterError(
                f"parameter line {line.strip()!r} of {notebook.name} is not understood by papermill "
                f"(it skips a line with a second '=', e.g. in its comment); rewrite the line",
                notebook=notebook.name, parameter=match.group(1))
    return params


_ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)\s*(?::[^=]*)?=")


def _parameter_lines(notebook: Path) -> list[str]:
    """The lines of the notebook's cell tagged ``parameters``."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    return cell.source.splitlines() if cell is not None else []


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """``["phase=2", "users=5"]`` -> ``{"phase": "2", "users": "5"}``."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError(f"parameter {pair!r} must be written NAME=VALUE", parameter=pair)
        out[name] = value
    return out


def resolve(notebooks: list[Path], raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Typed parameters for each notebook. Every given name must be declared by at least one
    notebook, and its value must convert to every declaring notebook's type."""
    declared = {nb.name: declared_parameters(nb) for nb in notebooks}
    for name in raw:
        if name in RESERVED:
            raise ParameterError(f"parameter '{name}' is set by `harness run` itself", parameter=name)
        if not any(name in params for params in declared.values()):
            known = sorted({p for params in declared.values() for p in params} - RESERVED)
            raise ParameterError(f"unknown parameter '{name}'; the runbooks declare: {', '.join(known)}",
                                 parameter=name)
    typed: dict[str, dict[str, Any]] = {}
    for nb in notebooks:
        params = declared[nb.name]
        typed[nb.name] = {name: params[name].convert(value, nb.name)
                          for name, value in raw.items() if name in params}
    return typed


def secret_names(notebooks: list[Path]) -> set[str]:
    """Parameters that any of ``notebooks`` declares secret."""
    return {p.name for nb in notebooks for p in declared_parameters(nb).values() if p.secret}


def effective(notebook: Path, raw: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of ``notebook`` as the kernel will see it: given values typed, defaults otherwise."""
    declared = declared_parameters(notebook)
    given = resolve([notebook], {k: v for k, v in raw.items() if k in declared})[notebook.name]
    return {name: given[name] if name in given else p.default_value() for name, p in declared.items()}


# -- by hand: parameters from the kernel's environment ---------------------------------------------------
ENV_PREFIX = "HARNESS_PARAM_"


def _annotation_name(annotation: Any) -> str:
    """``int`` -> ``"int"``, ``list[str]`` -> ``"list[str]"``, a string annotation as written."""
    import types

    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, types.GenericAlias):
        return str(annotation)
    return getattr(annotation, "__name__", str(annotation))


def from_environment(namespace: dict[str, Any], environ: dict[str, str] | None = None,
                     notebook: str = "") -> dict[str, Any]:
    """Apply ``HARNESS_PARAM_<NAME>=VALUE`` from the environment to ``namespace`` (a kernel's globals,
    after its parameters cell ran): what papermill's injected cell does under ``harness run``, for
    notebooks run by hand, by nbmake or in JupyterLab started with that environment. Only parameters
    the parameters cell declared (annotated) are set, each converted to its declared type (a value that
    does not fit raises ``ParameterError``); ``run_dir`` and ``run_id`` are not (``HARNESS_RUN_DIR``
    names the run). Returns what was applied."""
    import os

    env = os.environ if environ is None else environ
    declared = namespace.get("__annotations__") or {}
    applied: dict[str, Any] = {}
    for key, raw in sorted(env.items()):
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name in RESERVED or name not in declared:
            continue
        param = Parameter(name, _annotation_name(declared[name]), "")
        namespace[name] = applied[name] = param.convert(raw, notebook or "this notebook")
    return applied


def describe_applied(applied: dict[str, Any]) -> str:
    """``profile=quick, users=2`` with secret values redacted."""
    from harness.redact import is_secret

    return ", ".join(f"{k}=[redacted]" if is_secret(k) else f"{k}={v!r}" for k, v in applied.items())

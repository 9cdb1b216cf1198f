"""What a tool is: a function, a JSON input schema and MCP hints (read-only, destructive, ...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from suite.settings import Settings
from suite.tools.sandbox import Sandbox


@dataclass
class ToolContext:
    """What a tool may use: settings, the sandbox, and an HTTP client for upstream services."""

    settings: Settings
    sandbox: Sandbox
    http: httpx.AsyncClient


ToolFunc = Callable[[ToolContext, dict[str, Any]], "dict[str, Any] | Awaitable[dict[str, Any]]"]
ToolCheck = Callable[[ToolContext, dict[str, Any]], None]


@dataclass(frozen=True)
class ToolSpec:
    """One row of the tool table; MCP and REST both serve it from here."""

    name: str
    title: str
    description: str
    func: ToolFunc  # sync functions run in a worker thread
    input_schema: dict[str, Any]
    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False
    # cheap checks without side effects (sizes, where paths lead), made when the call is requested,
    # so a call that could never run is refused at once rather than after an admin approved it
    check: ToolCheck | None = None

    def annotations(self) -> dict[str, Any]:
        """MCP ``ToolAnnotations`` fields."""
        return {"title": self.title, "readOnlyHint": self.read_only,
                "destructiveHint": (not self.read_only) and self.destructive,
                "idempotentHint": self.idempotent, "openWorldHint": self.open_world}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "description": self.description,
                "input_schema": self.input_schema, "annotations": self.annotations()}


def schema(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    """An object schema that refuses unknown arguments."""
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


def string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def integer(description: str, minimum: int, maximum: int, default: int) -> dict[str, Any]:
    return {"type": "integer", "description": description, "minimum": minimum, "maximum": maximum,
            "default": default}


def boolean(description: str, default: bool = False) -> dict[str, Any]:
    return {"type": "boolean", "description": description, "default": default}

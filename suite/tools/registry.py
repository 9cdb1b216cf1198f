"""The tool table: every tool defined once, served by both MCP and REST."""

from __future__ import annotations

from suite.tools import files, system, upstream
from suite.tools.spec import ToolSpec

TOOLS: tuple[ToolSpec, ...] = files.TOOLS + upstream.TOOLS + system.TOOLS
TOOLS_BY_NAME: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}

if len(TOOLS_BY_NAME) != len(TOOLS):  # a duplicate name would silently shadow a tool
    raise RuntimeError("duplicate tool names in the tool table")

"""The tool server's root exception: an ``ApiError`` (status + common error shape) raised by tools."""

from __future__ import annotations

from suite.web import ApiError


class ToolError(ApiError):
    """A refused or failed tool call; ``status``/``code`` become the REST answer and the MCP error."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, code=code, headers=headers)


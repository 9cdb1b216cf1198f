"""The tool table over MCP (official ``mcp`` SDK v1, Streamable HTTP, stateless, JSON responses).

The low-level ``mcp.server.lowlevel.Server`` is used rather than ``FastMCP``'s decorators because
the tools are a table with explicit JSON schemas and hints; ``StreamableHTTPSessionManager`` is the
same transport ``FastMCP.streamable_http_app()`` uses. Authentication happens in the auth layer
(suite.auth.layer) before the SDK sees the request; the principal travels in the ASGI scope, which
the SDK hands to handlers as ``request_context.request``.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from suite.auth.keys import Principal
from suite.auth.layer import PRINCIPAL as PRINCIPAL_KEY
from suite.settings import Settings
from suite.tools import rbac
from suite.tools.dispatch import CallOutcome, ToolService
from suite.tools.errors import ToolError
from suite.tools.registry import TOOLS

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def to_mcp_tool(spec) -> types.Tool:
    return types.Tool(name=spec.name, title=spec.title, description=spec.description,
                      inputSchema=spec.input_schema, annotations=types.ToolAnnotations(**spec.annotations()))


def to_call_result(outcome: CallOutcome) -> types.CallToolResult:
    """REST's status + body as an MCP result: errors (and pending approvals) say so in text."""
    body = dict(outcome.body, http_status=outcome.status)
    if outcome.is_error:
        err = outcome.body.get("error", {})
        text = f"{outcome.status} {err.get('code')}: {err.get('message')}"
    elif outcome.status == 202:
        text = outcome.body["message"]
    else:
        text = json.dumps(outcome.body.get("result"), ensure_ascii=False, default=str)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structuredContent=body,
                                isError=outcome.is_error)


def build_server(service: ToolService) -> Server:
    server: Server = Server("suite-tools", version="1", instructions=(
        "Tools of the local AI suite. Destructive tools called by a developer return a pending "
        "approval id; an admin approves it."))

    def principal() -> Principal:
        request = server.request_context.request
        found = request.scope.get(PRINCIPAL_KEY) if request is not None else None
        if found is None:  # McpEndpoint always sets it; refuse rather than guess
            raise ToolError(401, "unauthenticated MCP request", "missing_api_key")
        return found

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        role = principal().role
        approvals = service.settings.tools.approvals_required
        return [to_mcp_tool(s) for s in TOOLS
                if rbac.decide(role, s.read_only, s.destructive, approvals) is not rbac.Decision.DENY]

    @server.call_tool(validate_input=False)  # validation happens in ToolService, audited
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        return to_call_result(await service.call(principal(), name, arguments, transport="mcp"))

    return server


def session_manager(server: Server, settings: Settings) -> StreamableHTTPSessionManager:
    """Stateless (every POST stands alone, so any worker can answer) with JSON responses."""
    security = None
    if settings.host in LOOPBACK:  # DNS-rebinding protection, as FastMCP enables it on loopback
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
            allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
    return StreamableHTTPSessionManager(app=server, json_response=True, stateless=True,
                                        security_settings=security)


class McpEndpoint:
    """ASGI endpoint at /mcp: the auth layer (suite.auth.layer) has put the caller in the scope; the
    SDK hands that scope to the handlers as ``request_context.request``."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope.get(PRINCIPAL_KEY) is None:  # the layer always sets it; refuse rather than guess
            err = ToolError(401, "unauthenticated MCP request", "missing_api_key")
            await JSONResponse(err.body(), status_code=err.status)(scope, receive, send)
            return
        await self.app.state.mcp_manager.handle_request(scope, receive, send)

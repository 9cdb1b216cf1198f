"""Tool server (port 8020): MCP at ``/mcp`` and REST at ``/tools/{name}``, one tool table behind both.

Wiring only: the logic is ``dispatch.ToolService`` (built in the lifespan with the security
stores, the sandbox and an HTTP client for upstream tools), REST is ``routes.router``, MCP is
``mcp_server`` (the official SDK's session manager behind ``McpEndpoint``).
"""

from __future__ import annotations

from fastapi import FastAPI

from suite.instrument import service_app
from suite.settings import Settings
from suite.tools.dispatch import ToolService
from suite.tools.mcp_server import McpEndpoint, build_server, session_manager
from suite.tools.routes import router


def audit_refusal(scope, status: int, reason: str, key_id: str | None) -> None:
    """The auth layer's refusals go to the tool server's audit log (Starlette puts the app in the scope)."""
    service: ToolService | None = getattr(scope["app"].state, "tools", None)
    if service is not None:
        transport = "mcp" if scope["path"] == "/mcp" else "rest"
        client = (scope.get("client") or ("unknown",))[0]
        service.audit_refusal(transport, scope["path"], status, reason, key_id, client)


def create_app(settings: Settings) -> FastAPI:
    def open_service(app: FastAPI) -> ToolService:
        service = ToolService.open(settings, app.state.metrics.registry)
        app.state.mcp_manager = session_manager(build_server(service), settings)
        return service

    app = service_app("tools", settings, open_service, router=router, ready_timeout_s=10,
                      storage=lambda tools: tools.space, on_refusal=audit_refusal,
                      running=lambda app: app.state.mcp_manager.run())
    app.router.add_route("/mcp", McpEndpoint(app), include_in_schema=False)
    return app

"""Tool server (port 8020): MCP at ``/mcp`` and REST at ``/tools/{name}``, one tool table behind both.

Wiring only: the logic is ``dispatch.ToolService`` (built in the lifespan with the security
stores, the sandbox and an HTTP client for upstream tools), REST is ``routes.router``, MCP is
``mcp_server`` (the official SDK's session manager behind ``McpEndpoint``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from suite import tls
from suite.instrument import instrument
from suite.settings import Settings
from suite.tools.dispatch import ToolMetrics, ToolService
from suite.tools.mcp_server import McpEndpoint, build_server, session_manager
from suite.tools.routes import router
from suite.tools.sandbox import Sandbox
from suite.tools.spec import ToolContext
from suite.tools.stores import open_stores

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stores = open_stores(settings)
        http = httpx.AsyncClient(timeout=settings.tools.upstream_timeout_s, verify=tls.client_context(settings))
        ctx = ToolContext(settings=settings, sandbox=Sandbox.from_settings(settings), http=http)
        service = ToolService(settings, ctx, stores.keys, stores.approvals, stores.audit,
                              ToolMetrics(app.state.metrics.registry))
        app.state.tools = service
        for approval_id in stores.approvals.recover_interrupted():
            log.warning("approval %s was executing when the service stopped; marked failed", approval_id)
        app.state.mcp_manager = session_manager(build_server(service), settings)
        poller = asyncio.create_task(service.poll_approvals(), name="approval-poller")
        try:
            async with app.state.mcp_manager.run():
                yield
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            service.refusals.flush(force=True)
            await http.aclose()
            stores.close()

    app = FastAPI(title="suite tools", lifespan=lifespan)

    def audit_refusal(scope, status: int, reason: str, key_id: str | None) -> None:
        service: ToolService | None = getattr(app.state, "tools", None)
        if service is not None:
            transport = "mcp" if scope["path"] == "/mcp" else "rest"
            client = (scope.get("client") or ("unknown",))[0]
            service.audit_refusal(transport, scope["path"], status, reason, key_id, client)

    instrument(app, "tools", ready=lambda: asyncio.to_thread(app.state.tools.ready), ready_timeout_s=10,
               settings=settings, on_refusal=audit_refusal,
               storage=lambda: getattr(getattr(app.state, "tools", None), "space", None))
    app.router.add_route("/mcp", McpEndpoint(app), include_in_schema=False)
    app.include_router(router)
    return app

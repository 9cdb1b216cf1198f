"""Tool server (port 8020): MCP at ``/mcp`` and REST at ``/tools/{name}``, one tool table behind both.

REST:  GET /tools                         tools the caller's role may use
       POST /tools/{name}                 body = the arguments object (or {"arguments": {...}})
                                          200 result | 202 pending approval | 4xx/5xx common shape
       GET /approvals[?status=]           admin: all; others: their own
       GET /approvals/{id}
       POST /approvals/{id}/approve|deny  admin; approve runs the call (once) and returns the result
       GET /audit[?limit=&key_id=&tool=]  admin
Every route but the probes needs ``Authorization: Bearer KEY`` (keys: ``suite keys create``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from suite.auth.keys import Principal
from suite.auth.layer import principal_of
from suite.settings import Settings
from suite.tools import rbac
from suite.tools.approvals import ApprovalError
from suite.tools.dispatch import ToolMetrics, ToolService
from suite.tools.errors import ToolError
from suite.tools.mcp_server import McpEndpoint, build_server, session_manager
from suite.tools.registry import TOOLS
from suite.tools.sandbox import Sandbox
from suite.tools.spec import ToolContext
from suite.tools.stores import open_stores
from suite.web import instrument

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        stores = open_stores(settings)
        http = httpx.AsyncClient(timeout=settings.tools.upstream_timeout_s)
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
            await http.aclose()
            stores.close()

    app = FastAPI(title="suite tools", lifespan=lifespan)

    async def ready() -> dict[str, Any]:
        service: ToolService = app.state.tools
        service.approvals.db.query("SELECT 1")
        roots = service.ctx.sandbox.roots
        missing = [str(r) for r in roots if not r.is_dir()]
        if missing:
            log.error("sandbox roots missing: %s", ", ".join(missing))
            raise RuntimeError(f"{len(missing)} sandbox root(s) missing (see the tools log)")
        return {"tools": len(TOOLS), "sandbox_roots": len(roots)}  # no paths to unauthenticated callers

    def audit_refusal(scope, status: int, reason: str, key_id: str | None) -> None:
        service: ToolService | None = getattr(app.state, "tools", None)
        if service is not None:
            transport = "mcp" if scope["path"] == "/mcp" else "rest"
            service.audit_refusal(transport, scope["path"], status, reason, key_id)

    instrument(app, "tools", ready=ready, ready_timeout_s=10, settings=settings, on_refusal=audit_refusal)
    app.router.add_route("/mcp", McpEndpoint(app), include_in_schema=False)

    def caller(request: Request, target: str) -> Principal:
        """The caller the auth layer let through (suite.auth.layer); ``target`` names it in errors."""
        principal = principal_of(request)
        if principal is None:  # the layer always sets it; refuse rather than guess
            raise ToolError(401, f"unauthenticated request for {target[:100]}", "missing_api_key")
        return principal

    def reply(outcome) -> JSONResponse:
        return JSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)

    @app.get("/tools")
    async def list_tools(request: Request) -> dict:
        principal = caller(request, "tools.list")
        approvals = settings.tools.approvals_required
        rows = []
        for spec in TOOLS:
            decision = rbac.decide(principal.role, spec.read_only, spec.destructive, approvals)
            if decision is not rbac.Decision.DENY:
                rows.append(dict(spec.describe(), access=decision.value))
        return {"role": principal.role, "tools": rows}

    @app.post("/tools/{name}")
    async def call_tool(name: str, request: Request) -> JSONResponse:
        principal = caller(request, name)
        raw = await request.body()
        try:
            args = json.loads(raw) if raw.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            args = _BadBody()
        if isinstance(args, dict) and set(args) == {"arguments"} and isinstance(args["arguments"], dict):
            args = args["arguments"]
        return reply(await app.state.tools.call(principal, name, args, transport="rest"))

    @app.get("/approvals")
    async def list_approvals(request: Request, status: str | None = None,
                             limit: int = Query(100, ge=1, le=1000)) -> dict:
        principal = caller(request, "approvals.list")
        service: ToolService = app.state.tools
        service.approvals.expire()
        rows = service.approvals.list(status, limit)
        if not rbac.has(principal.role, rbac.APPROVE):
            rows = [r for r in rows if r["requested_by"] == principal.key_id]
        return {"approvals": rows}

    @app.get("/approvals/{approval_id}")
    async def get_approval(approval_id: str, request: Request) -> dict:
        principal = caller(request, "approvals.get")
        service: ToolService = app.state.tools
        service.approvals.expire()
        try:
            rec = service.approvals.get(approval_id)
        except ApprovalError as exc:
            raise ToolError(exc.status, exc.message, exc.code) from None
        if rec["requested_by"] != principal.key_id and not rbac.has(principal.role, rbac.APPROVE):
            raise ToolError(404, f"approval '{approval_id}' not found", "approval_not_found")
        return rec

    async def decide(approval_id: str, request: Request, approve: bool) -> dict:
        principal = caller(request, "approvals.approve" if approve else "approvals.deny")
        try:
            body = json.loads(await request.body() or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = {}
        reason = str(body.get("reason", ""))[:500] if isinstance(body, dict) else ""
        return await app.state.tools.decide(principal, approval_id, approve, reason)

    @app.post("/approvals/{approval_id}/approve")
    async def approve(approval_id: str, request: Request) -> dict:
        return await decide(approval_id, request, True)

    @app.post("/approvals/{approval_id}/deny")
    async def deny(approval_id: str, request: Request) -> dict:
        return await decide(approval_id, request, False)

    @app.get("/audit")
    async def audit(request: Request, limit: int = Query(100, ge=1, le=1000), key_id: str | None = None,
                    tool: str | None = None, since: float | None = None) -> dict:
        principal = caller(request, "audit.read")
        service: ToolService = app.state.tools
        service.require(principal, rbac.AUDIT, "rest", "audit.read")
        return {"entries": service.audit.recent(limit, key_id, tool, since)}

    return app


class _BadBody:
    """Stands for a body that is not JSON; the dispatcher refuses it (400) and audits the refusal."""

    def __repr__(self) -> str:
        return "<body is not valid JSON>"

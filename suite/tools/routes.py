"""The tool server's REST routes; the logic is ``ToolService`` on ``app.state.tools``.

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

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from suite.auth.keys import Principal
from suite.auth.layer import principal_of
from suite.tools import rbac
from suite.tools.approvals import ApprovalError
from suite.tools.dispatch import CallOutcome, ToolService
from suite.tools.errors import ToolError
from suite.tools.registry import TOOLS
from suite.web import from_state

router = APIRouter()
Tools = Annotated[ToolService, from_state("tools")]
ToolName = Annotated[str, Path(max_length=64, description="a tool of GET /tools")]
ApprovalId = Annotated[str, Path(max_length=64)]
ARGUMENTS = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "additionalProperties": True,
    "description": "the tool's arguments (its input schema in GET /tools), or {\"arguments\": {...}}"}}}}}
DECISION = {"requestBody": {"required": False, "content": {"application/json": {"schema": {
    "type": "object", "properties": {"reason": {"type": "string", "maxLength": 500}}}}}}}


def caller(request: Request, tools: ToolService, target: str) -> Principal:
    """The caller the auth layer let through (suite.auth.layer); ``target`` names it in errors."""
    principal = principal_of(request)
    if principal is None:  # the layer always sets it; refuse rather than guess
        raise ToolError(401, f"unauthenticated request for {target[:100]}", "missing_api_key")
    return principal


def reply(outcome: CallOutcome) -> JSONResponse:
    return JSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)


@router.get("/tools")
async def list_tools(request: Request, tools: Tools) -> dict:
    principal = caller(request, tools, "tools.list")
    approvals = tools.settings.tools.approvals_required
    rows = []
    for spec in TOOLS:
        decision = rbac.decide(principal.role, spec.read_only, spec.destructive, approvals)
        if decision is not rbac.Decision.DENY:
            rows.append(dict(spec.describe(), access=decision.value))
    return {"role": principal.role, "tools": rows}


@router.post("/tools/{name}", openapi_extra=ARGUMENTS)
async def call_tool(name: ToolName, request: Request, tools: Tools) -> JSONResponse:
    principal = caller(request, tools, name)
    raw = await request.body()
    try:
        args = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        args = _BadBody()
    if isinstance(args, dict) and set(args) == {"arguments"} and isinstance(args["arguments"], dict):
        args = args["arguments"]
    return reply(await tools.call(principal, name, args, transport="rest"))


@router.get("/approvals")
async def list_approvals(request: Request, tools: Tools, status: str | None = Query(None, max_length=32),
                         limit: int = Query(100, ge=1, le=1000)) -> dict:
    principal = caller(request, tools, "approvals.list")
    tools.approvals.expire()
    rows = tools.approvals.list(status, limit)
    if not rbac.has(principal.role, rbac.APPROVE):
        rows = [r for r in rows if r["requested_by"] == principal.key_id]
    return {"approvals": rows}


@router.get("/approvals/{approval_id}")
async def get_approval(approval_id: ApprovalId, request: Request, tools: Tools) -> dict:
    principal = caller(request, tools, "approvals.get")
    tools.approvals.expire()
    try:
        rec = tools.approvals.get(approval_id)
    except ApprovalError as exc:
        raise ToolError(exc.status, exc.message, exc.code) from None
    if rec["requested_by"] != principal.key_id and not rbac.has(principal.role, rbac.APPROVE):
        raise ToolError(404, f"approval '{approval_id}' not found", "approval_not_found")
    return rec


async def _decide(approval_id: str, request: Request, tools: ToolService, approve: bool) -> dict:
    principal = caller(request, tools, "approvals.approve" if approve else "approvals.deny")
    try:
        body = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {}
    reason = str(body.get("reason", ""))[:500] if isinstance(body, dict) else ""
    return await tools.decide(principal, approval_id, approve, reason)


@router.post("/approvals/{approval_id}/approve", openapi_extra=DECISION)
async def approve(approval_id: ApprovalId, request: Request, tools: Tools) -> dict:
    return await _decide(approval_id, request, tools, True)


@router.post("/approvals/{approval_id}/deny", openapi_extra=DECISION)
async def deny(approval_id: ApprovalId, request: Request, tools: Tools) -> dict:
    return await _decide(approval_id, request, tools, False)


@router.get("/audit")
async def audit(request: Request, tools: Tools, limit: int = Query(100, ge=1, le=1000),
                key_id: str | None = Query(None, max_length=64), tool: str | None = Query(None, max_length=64),
                since: float | None = Query(None, ge=0, allow_inf_nan=False,
                                            description="epoch seconds")) -> dict:
    principal = caller(request, tools, "audit.read")
    tools.require(principal, rbac.AUDIT, "rest", "audit.read")
    return {"entries": tools.audit.recent(limit, key_id, tool, since)}


class _BadBody:
    """Stands for a body that is not JSON; the dispatcher refuses it (400) and audits the refusal."""

    def __repr__(self) -> str:
        return "<body is not valid JSON>"

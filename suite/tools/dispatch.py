"""The one path every tool call takes, whatever the transport (REST or MCP):

(authenticated by suite.auth.layer) -> find the tool -> RBAC -> rate limit -> validate arguments -> run it, or park it
for approval -> audit + metrics. Approved calls run here too, exactly once.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
from prometheus_client import CollectorRegistry, Counter, Histogram

from suite import tls
from suite.aiotasks import cancel_and_wait
from suite.auth.keys import KeyStore, Principal
from suite.auth.ratelimit import RateLimiter
from suite.settings import Settings
from suite.storage import SpaceGuard, is_disk_full
from suite.tools import approvals as approvals_mod
from suite.tools import rbac
from suite.tools.approvals import ApprovalError, ApprovalStore
from suite.tools.audit import AuditLog, AuditRecord, RefusalAudit, args_digest
from suite.tools.errors import ToolError
from suite.tools.registry import TOOLS_BY_NAME
from suite.tools.sandbox import Sandbox
from suite.tools.spec import ToolContext, ToolSpec
from suite.tools.stores import Stores, open_stores
from suite.web.logs import request_id

log = logging.getLogger(__name__)


class ToolMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.rbac = Counter("rbac_permission_checks_total", "RBAC decisions", ["result", "role"],
                            registry=registry)
        self.approvals = Counter("approval_requests_total", "approval requests by status reached",
                                 ["status"], registry=registry)
        self.executions = Counter("mcp_tool_executions_total",
                                  "tool calls by outcome (success, error, denied, rate_limited, invalid, "
                                  "pending_approval)", ["tool", "status"], registry=registry)
        self.duration = Histogram("mcp_tool_duration_seconds", "time spent running a tool", ["tool"],
                                  registry=registry)


@dataclass
class CallOutcome:
    """What a call produced: an HTTP status and a JSON body (MCP maps it to a CallToolResult)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def refused(cls, err: ToolError) -> CallOutcome:
        return cls(err.status, err.body(), dict(err.headers))

    @property
    def is_error(self) -> bool:
        return self.status >= 400


class ToolService:
    """Holds the stores and runs calls; built in the app's lifespan and kept on ``app.state.tools``."""

    def __init__(self, settings: Settings, ctx: ToolContext, keys: KeyStore, approvals: ApprovalStore,
                 audit: AuditLog, metrics: ToolMetrics) -> None:
        self.settings = settings
        self.ctx = ctx
        self.keys = keys
        self.approvals = approvals
        self.audit = audit
        self.metrics = metrics
        self.limiter = RateLimiter(settings.tools.rate_limit_per_minute)
        self.refusals = RefusalAudit(audit, settings.tools.audit_refusals_per_minute)
        self.space = SpaceGuard(audit.db.path.parent, settings.storage.reserve_bytes, "the tool server's data")
        self.validators = {name: jsonschema.Draft202012Validator(spec.input_schema)
                           for name, spec in TOOLS_BY_NAME.items()}
        self._stores: Stores | None = None  # what open() opened and aclose() closes
        self._poller: asyncio.Task | None = None

    @classmethod
    def open(cls, settings: Settings, registry: CollectorRegistry) -> ToolService:
        """The service as the app runs it (in its lifespan, on the running loop): the security stores,
        the sandbox, an HTTP client for upstream tools, approvals interrupted by a stop marked failed,
        and the approval poller started."""
        stores = open_stores(settings)
        http = httpx.AsyncClient(timeout=settings.tools.upstream_timeout_s, verify=tls.client_context(settings))
        ctx = ToolContext(settings=settings, sandbox=Sandbox.from_settings(settings), http=http)
        service = cls(settings, ctx, stores.keys, stores.approvals, stores.audit, ToolMetrics(registry))
        service._stores = stores
        for approval_id in stores.approvals.recover_interrupted():
            log.warning("approval %s was executing when the service stopped; marked failed", approval_id)
        service._poller = asyncio.create_task(service.poll_approvals(), name="approval-poller")
        return service

    async def aclose(self) -> None:
        """Stop the poller, write the refusal summaries still open, close the client and the stores."""
        await cancel_and_wait(self._poller)
        self.refusals.flush(force=True)
        await self.ctx.http.aclose()
        if self._stores is not None:
            self._stores.close()

    # -- probes ---------------------------------------------------------------------------------
    def ready(self) -> dict[str, Any]:
        """The security database answers and every sandbox root exists (no paths: /ready is open)."""
        self.approvals.db.query("SELECT 1")
        roots = self.ctx.sandbox.roots
        missing = [str(r) for r in roots if not r.is_dir()]
        if missing:
            log.error("sandbox roots missing: %s", ", ".join(missing))
            raise RuntimeError(f"{len(missing)} sandbox root(s) missing (see the tools log)")
        return {"tools": len(TOOLS_BY_NAME), "sandbox_roots": len(roots)}

    # -- authentication (done by suite.auth.layer; its refusals are audited here) ------------------
    def audit_refusal(self, transport: str, target: str, status: int, reason: str, key_id: str | None,
                      client: str = "unknown") -> None:
        """A request the auth layer refused (no key, bad key, a role outside the route's policy): audited
        through ``RefusalAudit``, so one client adds a bounded number of rows a minute."""
        decision = "unauthenticated" if status == 401 else "denied"
        self.metrics.rbac.labels(decision, "none").inc()
        rec = AuditRecord(transport=transport, tool=target, decision=decision, outcome="refused", status=status,
                          key_id=key_id, detail=reason, request_id=request_id.get())
        try:
            self.refusals.refused(client, rec)
        except Exception:  # the audit must not turn a refusal into a 500; it is logged loudly
            log.exception("audit write failed for a refused request to %s", target)

    def require(self, principal: Principal, permission: str, transport: str, target: str) -> None:
        """403 (audited) unless the principal's role holds ``permission``."""
        if rbac.has(principal.role, permission):
            self.metrics.rbac.labels("allowed", principal.role).inc()
            return
        self.metrics.rbac.labels("denied", principal.role).inc()
        self._audit(transport, target, principal, None, "denied", "refused", 403, 0.0,
                    detail=f"needs {permission}")
        raise ToolError(403, f"role '{principal.role}' may not do this (needs {permission})", "forbidden")

    # -- calls ----------------------------------------------------------------------------------
    async def call(self, principal: Principal, name: str, args: Any, transport: str) -> CallOutcome:
        """Run one tool call through every check; never raises for a client's mistake."""
        t0 = time.perf_counter()
        digest = args_digest(args)
        spec = TOOLS_BY_NAME.get(name)
        if spec is None:
            return self._refuse(transport, name, principal, digest, "unknown_tool", t0,
                                ToolError(404, f"unknown tool '{name[:100]}'", "unknown_tool"))
        decision = rbac.decide(principal.role, spec.read_only, spec.destructive,
                               self.settings.tools.approvals_required)
        self.metrics.rbac.labels(decision.value, principal.role).inc()
        if decision is rbac.Decision.DENY:
            needed = rbac.required_permission(spec.read_only, spec.destructive)
            return self._refuse(transport, name, principal, digest, "denied", t0,
                                ToolError(403, f"role '{principal.role}' may not call '{name}' "
                                               f"(needs {needed})", "forbidden"))
        refused = self._rate_limited(principal, name)
        if refused:
            return self._refuse(transport, name, principal, digest, "rate_limited", t0, refused)
        problem = self._invalid(spec, args)
        if problem:
            return self._refuse(transport, name, principal, digest, "invalid", t0, problem)
        full = None if spec.read_only else self.space.refusal()  # reads go on when the disk is full
        if full:
            return self._refuse(transport, name, principal, digest, "insufficient_storage", t0,
                                ToolError(507, full, "insufficient_storage", headers={"Retry-After": "30"}))
        if decision is rbac.Decision.APPROVAL:
            return self._park(transport, spec, principal, args, digest, t0)
        outcome = await self._run(spec, args)
        self._finish(transport, spec, principal, digest, "allowed", outcome, t0)
        return outcome

    def _rate_limited(self, principal: Principal, name: str) -> ToolError | None:
        """429 once the key spent its per-minute budget (all tools together), or the tool's own."""
        tools = self.settings.tools
        limits = [(("key", principal.key_id), tools.rate_limit_per_minute)]
        if name in tools.rate_limit_per_tool:
            limits.append((("tool", principal.key_id, name), tools.rate_limit_per_tool[name]))
        wait = self.limiter.check_limits(limits)
        if not wait:
            return None
        per_tool = tools.rate_limit_per_tool.get(name)
        budget = (f"{tools.rate_limit_per_minute}/min per key" +
                  (f", {per_tool}/min for '{name}'" if per_tool is not None else ""))
        return ToolError(429, f"rate limit reached ({budget}); retry in {wait:.1f}s", "rate_limited",
                         headers={"Retry-After": RateLimiter.retry_after_header(wait)})

    def _invalid(self, spec: ToolSpec, args: Any) -> ToolError | None:
        """Why these arguments can never run (size, schema, the tool's own checks), or None.

        Made when the call is requested, so a call waiting for an approval is one that can run."""
        if not isinstance(args, dict):
            return ToolError(400, "arguments must be a JSON object", "invalid_arguments")
        size = len(json.dumps(args, ensure_ascii=False, default=str).encode())
        if size > self.settings.tools.max_argument_bytes:
            return ToolError(413, f"arguments are {size} bytes; the limit is "
                                  f"{self.settings.tools.max_argument_bytes}", "arguments_too_large")
        error = jsonschema.exceptions.best_match(self.validators[spec.name].iter_errors(args))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path)
            message = f"{where + ': ' if where else ''}{error.message}"[:500]
            return ToolError(400, f"invalid arguments for '{spec.name}': {message}", "invalid_arguments")
        if spec.check is not None:
            try:
                spec.check(self.ctx, args)
            except ToolError as exc:
                return exc
            except OSError as exc:
                return ToolError(400, f"{spec.name}: {exc.strerror or exc}", "os_error")
        return None

    async def _run(self, spec: ToolSpec, args: dict[str, Any]) -> CallOutcome:
        t0 = time.perf_counter()
        try:
            if inspect.iscoroutinefunction(spec.func):
                result = await spec.func(self.ctx, args)
            else:
                result = await asyncio.to_thread(spec.func, self.ctx, args)
        except ToolError as exc:
            return CallOutcome.refused(exc)
        except OSError as exc:  # a path or file the caller named that the OS refuses
            if is_disk_full(exc):
                return CallOutcome.refused(ToolError(507, f"{spec.name}: insufficient storage ({exc.strerror}); "
                                                          "nothing was written. Free space and retry",
                                                     "insufficient_storage", headers={"Retry-After": "30"}))
            return CallOutcome.refused(ToolError(400, f"{spec.name}: {exc.strerror or exc}", "os_error"))
        except Exception as exc:
            log.exception("tool %s crashed", spec.name)
            return CallOutcome.refused(ToolError(500, f"{spec.name} failed: {type(exc).__name__}",
                                                 "tool_crashed"))
        finally:
            self.metrics.duration.labels(spec.name).observe(time.perf_counter() - t0)
        return CallOutcome(200, {"tool": spec.name, "result": result,
                             "duration_ms": round((time.perf_counter() - t0) * 1000, 1)})

    def _park(self, transport: str, spec: ToolSpec, principal: Principal, args: dict, digest: str,
              t0: float) -> CallOutcome:
        rec = self.approvals.create(spec.name, args, principal.key_id, principal.role)
        self.metrics.approvals.labels("pending").inc()
        outcome = CallOutcome(202, {"status": "pending_approval", "approval_id": rec["id"], "tool": spec.name,
                                "expires_at": rec["expires_at"],
                                "message": f"'{spec.name}' is destructive: an admin must approve "
                                           f"{rec['id']} (POST /approvals/{rec['id']}/approve or "
                                           f"`suite approvals approve {rec['id']}`)"},
                          {"Location": f"/approvals/{rec['id']}"})
        self.metrics.executions.labels(spec.name, "pending_approval").inc()
        self._audit(transport, spec.name, principal, digest, "approval_required", "pending", 202,
                    _ms(t0), approval_id=rec["id"])
        return outcome

    def _refuse(self, transport: str, name: str, principal: Principal, digest: str, decision: str,
                t0: float, err: ToolError) -> CallOutcome:
        label = name if name in TOOLS_BY_NAME else "unknown"
        self.metrics.executions.labels(label, decision).inc()
        self._audit(transport, name[:100], principal, digest, decision, "refused", err.status, _ms(t0),
                    detail=err.message)
        return CallOutcome.refused(err)

    def _finish(self, transport: str, spec: ToolSpec, principal: Principal | None, digest: str,
                decision: str, outcome: CallOutcome, t0: float, approval_id: str | None = None,
                detail: str = "", key_id: str | None = None, role: str | None = None) -> None:
        status = "error" if outcome.is_error else "success"
        self.metrics.executions.labels(spec.name, status).inc()
        message = outcome.body.get("error", {}).get("message", "") if outcome.is_error else ""
        self._audit(transport, spec.name, principal, digest, decision, status, outcome.status, _ms(t0),
                    approval_id=approval_id, detail=(detail + " " + message).strip(), key_id=key_id, role=role)

    def _audit(self, transport: str, tool: str, principal: Principal | None, digest: str | None,
               decision: str, outcome: str, status: int, duration_ms: float, *,
               approval_id: str | None = None, detail: str = "", key_id: str | None = None,
               role: str | None = None) -> None:
        try:
            self.audit.write(AuditRecord(
                transport=transport, tool=tool, decision=decision, outcome=outcome, status=status,
                key_id=key_id or (principal.key_id if principal else None),
                role=role or (principal.role if principal else None), args_sha256=digest,
                duration_ms=duration_ms, approval_id=approval_id, detail=detail, request_id=request_id.get()))
        except Exception:  # the audit must not turn a served call into a 500; it is logged loudly
            log.exception("audit write failed for %s", tool)

    # -- approvals ------------------------------------------------------------------------------
    async def decide(self, principal: Principal, approval_id: str, approve: bool, reason: str,
                     transport: str = "rest") -> dict[str, Any]:
        """An admin approves (and the call runs, once) or denies a pending request."""
        target = "approvals.approve" if approve else "approvals.deny"
        self.require(principal, rbac.APPROVE, transport, target)
        t0 = time.perf_counter()
        digest = args_digest({"approval_id": approval_id})
        try:
            if approve:
                self._requester_valid(self.approvals.get(approval_id))
            rec = self.approvals.decide(approval_id, approve, principal.key_id, reason)
        except ApprovalError as exc:
            if exc.status == 410:
                self.metrics.approvals.labels("expired").inc()
            self._audit(transport, target, principal, digest, "allowed", "refused", exc.status, _ms(t0),
                        approval_id=approval_id, detail=exc.message)
            raise ToolError(exc.status, exc.message, exc.code) from None
        self.metrics.approvals.labels(rec["status"]).inc()
        self._audit(transport, target, principal, digest, "allowed", "success", 200, _ms(t0),
                    approval_id=approval_id, detail=reason)
        if approve:
            rec = await self.execute_approved(approval_id)
        return rec

    async def execute_approved(self, approval_id: str) -> dict[str, Any]:
        """Run an approved request if nobody has yet (atomic claim); return its record. While the disk is
        full it stays approved, unclaimed (run by the poller once space is back, or expired)."""
        if self.space.refusal():
            return self.approvals.get(approval_id)
        rec = self.approvals.claim(approval_id)
        if rec is None:
            return self.approvals.get(approval_id)
        try:
            self._requester_valid(rec)
        except ApprovalError as exc:
            self.metrics.approvals.labels("cancelled").inc()
            return self.approvals.cancel(approval_id, exc.message)
        t0 = time.perf_counter()
        spec = TOOLS_BY_NAME.get(rec["tool"])
        problem = self._invalid(spec, rec["arguments"]) if spec else ToolError(
            400, f"unknown tool {rec['tool']}", "unknown_tool")
        if problem or spec is None:
            outcome = CallOutcome.refused(problem)
        else:
            outcome = await self._run(spec, rec["arguments"])
        if spec is not None:
            self._finish("approval", spec, None, args_digest(rec["arguments"]), "approved", outcome, t0,
                         approval_id=approval_id, detail=f"approved by {rec['decided_by']}",
                         key_id=rec["requested_by"], role=rec["requester_role"])
        done = self.approvals.finish(approval_id, not outcome.is_error,
                                     {"status": outcome.status, **outcome.body})
        self.metrics.approvals.labels(done["status"]).inc()
        return done

    def _requester_valid(self, rec: dict[str, Any]) -> None:
        """A request dies with its requester's key: 409 (and cancelled) once the key is not valid."""
        if rec["status"] in (approvals_mod.PENDING, approvals_mod.APPROVED, approvals_mod.EXECUTING) and \
                not self.keys.is_active(rec["requested_by"]):
            message = (f"the key {rec['requested_by']} that requested {rec['id']} was revoked or expired; "
                       "the request is cancelled and will not run")
            self.approvals.cancel(rec["id"], message)
            raise ApprovalError(409, message, "requester_key_revoked")

    async def poll_approvals(self) -> None:
        """Expire stale requests and run those approved elsewhere (the CLI), and write the summary rows
        of ended refusal windows, forever."""
        while True:
            try:
                self.refusals.flush()
                for _ in self.approvals.expire():
                    self.metrics.approvals.labels("expired").inc()
                for approval_id in self.approvals.approved_ids():
                    await self.execute_approved(approval_id)
            except Exception:  # keep polling; a broken row must not stop approvals
                log.exception("approval poll failed")
            await asyncio.sleep(self.settings.tools.approval_poll_s)


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)

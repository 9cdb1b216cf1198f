"""The authentication layer every service runs (``suite.instrument`` installs it): pure ASGI.

For each HTTP request:
  1. ``/health``, ``/ready``, ``/metrics`` pass without a key (``policy.OPEN``);
  2. ``Authorization: Bearer KEY`` (what the openai SDK sends for ``api_key``) is checked against the
     key store through ``KeyCache`` (no key, unknown, revoked, expired: 401; a client past
     ``auth.unauthenticated_per_minute`` failed attempts: 429, and nothing more is logged);
  3. the request's method and path are matched against the service's policy table (not against the
     app's routes): a path or method missing from it, an unknown role, or a role without the
     route's permission: 403 naming the permission;
  4. the principal goes into the scope (``scope["suite.principal"]``) and the caller's Authorization
     header into ``CALLER_AUTHORIZATION`` for the service's own calls downstream (``forward_auth``).

Service-to-service calls **forward the caller's key** (gateway -> inference, rag -> embedding and
gateway, tools -> memory, rag and gateway): each hop checks the caller's own role, so no service can
be used to reach what its caller may not call directly (no confused deputy), and no service holds a
credential of its own that could leak. Readiness probes call only their dependencies' ``/ready``
(open), so no probe needs a key either.

With ``auth.enabled = false`` every request passes as an anonymous principal of
``auth.anonymous_role`` (``suite up`` announces it and refuses it beyond loopback).
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable
from typing import Any

from suite.auth import policy, roles
from suite.auth.keys import KeyCache, KeyStore, Principal
from suite.auth.ratelimit import RateLimiter
from suite.settings import Settings
from suite.web.errors import error_body

log = logging.getLogger("suite.auth")

PRINCIPAL = "suite.principal"
CALLER_AUTHORIZATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("caller_authorization",
                                                                                  default=None)
Refusal = Callable[[dict, int, str, "str | None"], None]


def forward_auth() -> dict[str, str]:
    """Headers for a call this service makes on behalf of the request being served: its caller's key."""
    value = CALLER_AUTHORIZATION.get()
    return {"Authorization": value} if value else {}


def principal_of(scope_or_request: Any) -> Principal | None:
    scope = getattr(scope_or_request, "scope", scope_or_request)
    return scope.get(PRINCIPAL)


def anonymous(settings: Settings) -> Principal:
    return Principal("anonymous", settings.auth.anonymous_role, "auth disabled")


class AuthLayer:
    """ASGI middleware: authenticate, authorise by the policy table, remember the caller."""

    def __init__(self, app, *, service: str, settings: Settings, on_refusal: Refusal | None = None,
                 store: KeyStore | None = None) -> None:
        self.app = app
        self.service = service
        self.settings = settings
        self.on_refusal = on_refusal
        self._store = store
        self._cache: KeyCache | None = None
        self.limiter = RateLimiter(settings.auth.unauthenticated_per_minute)

    def cache(self) -> KeyCache:
        if self._cache is None:  # opened on first use: an app can be built before the store exists
            self._store = self._store or KeyStore.open(self.settings.key_store_path)
            self._cache = KeyCache(self._store, self.settings.auth.cache_s)
        return self._cache

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or (scope["path"] in policy.OPEN and scope["method"] in ("GET", "HEAD")):
            await self.app(scope, receive, send)
            return
        if not self.settings.auth.enabled:
            scope[PRINCIPAL] = anonymous(self.settings)
            await self.app(scope, receive, send)
            return
        header = _header(scope, b"authorization")
        scheme, _, key = (header or "").strip().partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        verdict = self.cache().check(key)
        principal = verdict.principal
        if principal is None:
            client = (scope.get("client") or ("unknown",))[0]
            wait = self.limiter.check(("anonymous", client))
            if wait:
                await _reply(send, 429, "too many attempts without a valid API key from this client; "
                                        f"retry in {wait:.0f}s", "rate_limited",
                             {"retry-after": RateLimiter.retry_after_header(wait)})
                return
            self._refused(scope, 401, verdict.reason, KeyStore.key_id_of(key))
            await _reply(send, 401, verdict.reason,
                         "invalid_api_key" if key else "missing_api_key", {"www-authenticate": "Bearer"})
            return
        template, needed = policy.match(self.service, scope["method"], scope["path"])
        message = None
        if principal.role not in roles.ROLES:
            message = f"unknown role '{principal.role}' of key {principal.key_id}: refused"
        elif needed is None:
            shown = template or scope["path"][:200]
            message = (f"{scope['method']} {shown} is not in the policy table of {self.service} "
                       "(suite/auth/policy.py): refused to every role")
        elif not roles.has(principal.role, needed):
            message = f"role '{principal.role}' may not {scope['method']} {template} (needs {needed})"
        if message:
            self._refused(scope, 403, message, principal.key_id)
            await _reply(send, 403, message, "forbidden")
            return
        scope[PRINCIPAL] = principal
        token = CALLER_AUTHORIZATION.set(header)
        try:
            await self.app(scope, receive, send)
        finally:
            CALLER_AUTHORIZATION.reset(token)

    def _refused(self, scope, status: int, reason: str, key_id: str | None) -> None:
        log.warning("%s %s refused %d: %s", scope["method"], scope["path"][:200], status, reason,
                    extra={"method": scope["method"], "path": scope["path"][:200], "status": status})
        if self.on_refusal is not None:
            try:
                self.on_refusal(scope, status, reason, key_id)
            except Exception:  # an audit hook must not turn a refusal into a 500
                log.exception("refusal hook failed")


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


async def _reply(send, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def require(request: Any, permission: str, what: str) -> Principal:
    """In a handler: 403 unless the caller's role holds ``permission`` (for a check finer than a
    route, e.g. one field of a body). With auth disabled the anonymous role is checked the same way."""
    from suite.web.errors import ApiError

    principal = principal_of(request)
    role = principal.role if principal else None
    if not roles.has(role, permission):
        raise ApiError(403, f"role '{role}' may not {what} (needs {permission})", code="forbidden")
    return principal

"""Transport hygiene on every service (``suite.instrument`` installs it): pure ASGI.

* ``Host`` must name the service: the bound address, a loopback name (``127.0.0.1``, ``localhost``,
  ``::1``) or one of ``auth.allowed_hosts`` — any port. A page on ``evil.example`` that a DNS
  rebinding points at 127.0.0.1 still sends ``Host: evil.example`` and is refused (400). This is
  the MCP SDK's rebinding protection, applied to every service;
* an ``Origin`` header (browsers send one on cross-origin and on POST requests) must be a loopback
  origin or one of ``auth.allowed_origins`` (403);
* state-changing requests (POST, PUT, PATCH) must say ``Content-Type: application/json`` (400), so
  neither a form post nor a bodyless ``fetch`` from a web page — the "simple" requests a browser
  sends cross-origin without asking — reaches a handler. DELETE needs a CORS preflight, which no
  service answers, so a page cannot send one.

Statuses are 400 and 403 (the issue's set of refusals); each body names the fix.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from suite.settings import WILDCARDS, Settings
from suite.web.errors import error_body

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
STATE_CHANGING = ("POST", "PUT", "PATCH")


def allowed_hosts(settings: Settings) -> frozenset[str]:
    names = set(LOOPBACK_NAMES) | {h.lower() for h in settings.auth.allowed_hosts}
    if settings.host not in WILDCARDS:
        names.add(settings.host.lower())
    return frozenset(names)


def host_name(value: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class TransportGuard:
    def __init__(self, app, *, settings: Settings) -> None:
        self.app = app
        self.hosts = allowed_hosts(settings)
        self.origins = frozenset(o.rstrip("/").lower() for o in settings.auth.allowed_origins)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k: v.decode("latin-1") for k, v in scope.get("headers", ())}
        problem = self.problem(scope["method"], headers)
        if problem is None:
            await self.app(scope, receive, send)
            return
        status, message, code = problem
        body = json.dumps(error_body(status, message, code=code)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def problem(self, method: str, headers: dict[bytes, str]) -> tuple[int, str, str] | None:
        host = headers.get(b"host")
        if host is None or host_name(host) not in self.hosts:
            return (400, f"Host '{(host or '')[:100]}' is not a name this service answers to "
                         f"({', '.join(sorted(self.hosts))}); add it to auth.allowed_hosts", "host_not_allowed")
        origin = headers.get(b"origin")
        if origin is not None and not self.origin_ok(origin):
            return (403, f"Origin '{origin[:100]}' may not call this service from a browser; add it to "
                         "auth.allowed_origins", "origin_not_allowed")
        if method in STATE_CHANGING:
            ctype = headers.get(b"content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                return (400, f"{method} requests take a JSON body: send Content-Type: application/json "
                             f"(got '{ctype[:60] or 'none'}'; an empty body is {{}})", "json_body_required")
        return None

    def origin_ok(self, origin: str) -> bool:
        origin = origin.rstrip("/").lower()
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and (parts.hostname or "") in LOOPBACK_NAMES

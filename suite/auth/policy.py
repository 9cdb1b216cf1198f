"""The policy table: for every service, each route (method, path template) and the permission it needs.

Deny by default: the auth layer matches a request's path against the templates of its service's
table (``match``), not against the app's own routes, so a route a service serves that is not in its
table is refused (403) to every role, and so is a path no route serves; only ``/health``, ``/ready``
and ``/metrics`` are open without a key (``OPEN``). The table is the
one the security runbook crosses with each service's ``/openapi.json`` (harness.security.rbac):
a route there and not here fails the review, and so does a route here that the service lacks.

``"*"`` as the method stands for every method of the route (MCP's one endpoint answers GET, POST
and DELETE; the tool server then applies each tool's own RBAC, suite.tools.rbac).
"""

from __future__ import annotations

import functools
import re

from starlette.routing import compile_path

from suite.auth import roles as r

OPEN = frozenset({"/health", "/ready", "/metrics"})

# FastAPI's own documentation routes, on every FastAPI app
DOCS = {("GET", "/openapi.json"): r.READ, ("GET", "/docs"): r.READ, ("GET", "/docs/oauth2-redirect"): r.READ,
        ("GET", "/redoc"): r.READ}

POLICY: dict[str, dict[tuple[str, str], str]] = {
    # both inference services; the serial engine (llama_cpp.server) also serves its extras
    "inference": {
        ("POST", "/v1/completions"): r.INFER,
        ("POST", "/v1/chat/completions"): r.INFER,
        ("GET", "/v1/models"): r.READ,
        ("POST", "/v1/embeddings"): r.EMBED,
        ("POST", "/v1/engines/copilot-codex/completions"): r.INFER,
        ("POST", "/extras/tokenize"): r.INFER,
        ("POST", "/extras/tokenize/count"): r.INFER,
        ("POST", "/extras/detokenize"): r.INFER,
    },
    "gateway": {
        ("POST", "/v1/chat/completions"): r.INFER,
        ("POST", "/v1/completions"): r.INFER,
        ("POST", "/v1/embeddings"): r.EMBED,
        ("GET", "/v1/models"): r.READ,
    },
    "embedding": {
        ("POST", "/embed"): r.EMBED,
        ("POST", "/v1/embeddings"): r.EMBED,
        ("GET", "/v1/models"): r.READ,
        ("POST", "/reload"): r.RELOAD,
    },
    "rag": {
        ("POST", "/index"): r.INDEX,
        ("POST", "/query"): r.QUERY,
        ("GET", "/collections"): r.READ,
        ("GET", "/collections/{name}"): r.READ,
        ("GET", "/collections/{name}/documents/{doc_id}"): r.READ,
        ("POST", "/admin/backup"): r.BACKUP,
        ("POST", "/admin/optimize/{name}"): r.MAINTAIN,
    },
    "memory": {
        ("GET", "/v1/memory/health"): r.READ,
        ("GET", "/v1/memory/projects"): r.READ,
        ("POST", "/v1/memory/projects"): r.WRITE,  # retention_days needs RETENTION (checked in the app)
        ("GET", "/v1/memory/projects/{name}"): r.READ,
        ("POST", "/v1/memory/notes"): r.WRITE,
        ("GET", "/v1/memory/notes"): r.READ,
        ("GET", "/v1/memory/notes/{note_id}"): r.READ,
        ("DELETE", "/v1/memory/notes/{note_id}"): r.DELETE_NOTES,
        ("GET", "/v1/memory/search"): r.SEARCH,
        ("POST", "/v1/memory/search"): r.SEARCH,
        ("POST", "/v1/memory/admin/maintain"): r.MAINTAIN,
        ("POST", "/v1/memory/admin/backup"): r.BACKUP,
        ("GET", "/v1/memory/admin/backups"): r.BACKUP,
    },
    "tools": {
        ("GET", "/tools"): r.TOOLS_READ,
        ("POST", "/tools/{name}"): r.TOOLS_READ,  # then each tool's own RBAC
        ("*", "/mcp"): r.TOOLS_READ,  # then each tool's own RBAC
        ("GET", "/approvals"): r.TOOLS_READ,  # a non-admin sees only their own requests
        ("GET", "/approvals/{approval_id}"): r.TOOLS_READ,
        ("POST", "/approvals/{approval_id}/approve"): r.APPROVE,
        ("POST", "/approvals/{approval_id}/deny"): r.APPROVE,
        ("GET", "/audit"): r.AUDIT,
    },
}


def table_of(service: str) -> dict[tuple[str, str], str]:
    """The table of a service by its name (``inference-chat`` and ``inference-code`` share one)."""
    key = "inference" if service.startswith("inference") else service
    return {**DOCS, **POLICY.get(key, {})}


def permission_for(service: str, method: str, template: str) -> str | None:
    """The permission a route needs, or None when the table does not list it (refused)."""
    table = table_of(service)
    method = "GET" if method == "HEAD" else method
    return table.get((method, template)) or table.get(("*", template))


@functools.cache
def _compiled(service: str) -> tuple[tuple[re.Pattern, str, dict[str, str]], ...]:
    by_template: dict[str, dict[str, str]] = {}
    for (method, template), permission in table_of(service).items():
        by_template.setdefault(template, {})[method] = permission
    return tuple((compile_path(t)[0], t, methods) for t, methods in by_template.items())


def match(service: str, method: str, path: str) -> tuple[str | None, str | None]:
    """(the template ``path`` matches, the permission ``method`` on it needs); Nones when the table
    has no such route (the layer refuses it)."""
    method = "GET" if method == "HEAD" else method
    for regex, template, methods in _compiled(service):
        if regex.match(path):
            return template, methods.get(method) or methods.get("*")
    return None, None

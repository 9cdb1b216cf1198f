"""Roles and the permissions they hold, for every service: deny by default.

guest     — infer, embed, query (RAG), search (memory), read (lists, notes, collections, read-only tools)
developer — guest + index (RAG), write notes and projects, write tools, request destructive tools
admin     — developer + reload models, run maintenance and backups, delete notes, set retention,
            run destructive tools without approval, decide approvals, read the audit log

A role that is not in ``ROLES`` holds nothing; a permission that no route names grants nothing.
"""

from __future__ import annotations

# what a route (suite.auth.policy) or a tool (suite.tools.rbac) may need
READ = "read"
INFER = "infer"
EMBED = "embed"
QUERY = "query"
SEARCH = "search"
INDEX = "index"
WRITE = "write"
RELOAD = "reload"
MAINTAIN = "maintain"
BACKUP = "backup"
DELETE_NOTES = "memory:delete"
RETENTION = "memory:retention"
TOOLS_READ = "tools:read"
TOOLS_WRITE = "tools:write"
TOOLS_DESTRUCTIVE = "tools:destructive"
TOOLS_REQUEST_DESTRUCTIVE = "tools:destructive:request"
APPROVE = "approvals:decide"
AUDIT = "audit:read"

_GUEST = frozenset({READ, INFER, EMBED, QUERY, SEARCH, TOOLS_READ})
_DEVELOPER = _GUEST | {INDEX, WRITE, TOOLS_WRITE, TOOLS_REQUEST_DESTRUCTIVE}
_ADMIN = _DEVELOPER | {RELOAD, MAINTAIN, BACKUP, DELETE_NOTES, RETENTION, TOOLS_DESTRUCTIVE, APPROVE, AUDIT}

ROLES: dict[str, frozenset[str]] = {"guest": _GUEST, "developer": _DEVELOPER, "admin": _ADMIN}


def has(role: str | None, permission: str) -> bool:
    """True only for a known role that holds the permission."""
    return permission in ROLES.get(role or "", frozenset())

"""Roles and permissions, deny by default.

guest: read-only tools. developer: every tool; destructive ones wait for an admin's approval (when
``settings.tools.approvals_required``). admin: everything, and decides approvals.
"""

from __future__ import annotations

from enum import StrEnum

READ, WRITE, DESTRUCTIVE, REQUEST_DESTRUCTIVE, APPROVE, AUDIT = (
    "tools:read", "tools:write", "tools:destructive", "tools:destructive:request", "approvals:decide",
    "audit:read")

ROLES: dict[str, frozenset[str]] = {
    "guest": frozenset({READ}),
    "developer": frozenset({READ, WRITE, REQUEST_DESTRUCTIVE}),
    "admin": frozenset({READ, WRITE, DESTRUCTIVE, REQUEST_DESTRUCTIVE, APPROVE, AUDIT}),
}


class Decision(StrEnum):
    ALLOW = "allowed"
    APPROVAL = "approval_required"
    DENY = "denied"


def required_permission(read_only: bool, destructive: bool) -> str:
    if read_only:
        return READ
    return DESTRUCTIVE if destructive else WRITE


def has(role: str | None, permission: str) -> bool:
    """True only for a known role that holds the permission."""
    return permission in ROLES.get(role or "", frozenset())


def decide(role: str | None, read_only: bool, destructive: bool, approvals_required: bool) -> Decision:
    """What happens when ``role`` calls a tool with these hints."""
    needed = required_permission(read_only, destructive)
    if has(role, needed):
        return Decision.ALLOW
    if needed == DESTRUCTIVE and has(role, REQUEST_DESTRUCTIVE):
        return Decision.APPROVAL if approvals_required else Decision.ALLOW
    return Decision.DENY

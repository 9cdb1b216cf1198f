"""What a role may do with one tool (the roles themselves are suite.auth.roles).

guest: read-only tools. developer: every tool; destructive ones wait for an admin's approval (when
``settings.tools.approvals_required``). admin: everything, and decides approvals.
"""

from __future__ import annotations

from enum import StrEnum

from suite.auth.roles import (
    APPROVE,
    AUDIT,
    ROLES,
    TOOLS_DESTRUCTIVE,
    TOOLS_READ,
    TOOLS_REQUEST_DESTRUCTIVE,
    TOOLS_WRITE,
    has,
)

READ, WRITE, DESTRUCTIVE, REQUEST_DESTRUCTIVE = TOOLS_READ, TOOLS_WRITE, TOOLS_DESTRUCTIVE, TOOLS_REQUEST_DESTRUCTIVE

__all__ = ["APPROVE", "AUDIT", "DESTRUCTIVE", "READ", "REQUEST_DESTRUCTIVE", "ROLES", "WRITE", "Decision",
           "decide", "has", "required_permission"]


class Decision(StrEnum):
    ALLOW = "allowed"
    APPROVAL = "approval_required"
    DENY = "denied"


def required_permission(read_only: bool, destructive: bool) -> str:
    if read_only:
        return READ
    return DESTRUCTIVE if destructive else WRITE


def decide(role: str | None, read_only: bool, destructive: bool, approvals_required: bool) -> Decision:
    """What happens when ``role`` calls a tool with these hints."""
    needed = required_permission(read_only, destructive)
    if has(role, needed):
        return Decision.ALLOW
    if needed == DESTRUCTIVE and has(role, REQUEST_DESTRUCTIVE):
        return Decision.APPROVAL if approvals_required else Decision.ALLOW
    return Decision.DENY

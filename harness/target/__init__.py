"""Targets: what the runbooks certify. Our own suite (generated from ``Settings``) or any stack a
target file describes; one path through the harness for both (``docs/targets.md``).

``open_target(path, settings, phase)`` is what a runbook calls: its ``target`` parameter (set by
``harness run --target FILE``), or, empty, the suite of the run's phase. ``headers(target, part,
role)`` is how a check authenticates to a part: the run's key of ``role`` on our suite, the part's
own secret (from the environment variable or file its ``auth`` names) elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from harness.target.model import (
    KINDS,
    ROLES,
    Auth,
    EmbeddingPart,
    GatewayPart,
    InferencePart,
    Part,
    Target,
    TargetError,
    is_loopback,
    load,
    parse,
    schema,
)
from harness.target.suite import suite_target
from suite.settings import Settings


def open_target(path: str | Path | None, settings: Settings | None = None, phase: int = 3) -> Target:
    """The target file at ``path``; without one, the suite's own stack of ``phase``."""
    if path:
        return load(path)
    return suite_target(settings or Settings(), phase)


def secret(target: Target, part: Part, role: str = "developer") -> str | None:
    """The secret ``part`` is called with (None: the part has no auth)."""
    if part.auth is None:
        return None
    if part.auth.run_keys:
        from harness.keys import run_keys

        return run_keys(target._settings or Settings()).for_role(role)
    return part.secret()


def headers(target: Target, part: Part, role: str = "developer") -> dict[str, str]:
    """The auth header of ``part`` ({} without auth)."""
    value = secret(target, part, role)
    if value is None or part.auth is None:
        return {}
    return {part.auth.header: f"{part.auth.scheme} {value}" if part.auth.scheme else value}


def secrets(target: Target) -> list[str]:
    """Every secret the target's file points at that is readable now (for the run's redactor)."""
    out = []
    for part in target.parts():
        if part.auth is not None and not part.auth.run_keys:
            try:
                out.append(part.secret())
            except TargetError:
                pass
    return [s for s in out if s]


__all__ = ["KINDS", "ROLES", "Auth", "EmbeddingPart", "GatewayPart", "InferencePart", "Part", "Target",
           "TargetError", "headers", "is_loopback", "load", "open_target", "parse", "schema", "secret", "secrets",
           "suite_target"]

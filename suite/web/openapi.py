"""Amending an app's ``/openapi.json`` with what FastAPI cannot see from the route signatures.

Routes that read their body by hand (the gateway relays it; the tool server validates it against each
tool's own JSON schema) still owe clients and fuzzers the truth about what they accept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI


def amend_openapi(app: FastAPI, amend: Callable[[dict[str, Any]], None]) -> None:
    """Build the schema as FastAPI does, then let ``amend`` change it in place (once, cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            amend(generate())
        return app.openapi_schema

    app.openapi = openapi

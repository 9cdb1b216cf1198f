"""Inference service entry point: the batched engine (default) or the serial ``llama_cpp.server`` path.

``inference.engine`` picks: ``batched`` (``batched_app`` over ``engine``: N slots decoded together)
or ``serial`` (``serial_app``: ``llama_cpp.server`` itself, one request at a time).
"""

from __future__ import annotations

from fastapi import FastAPI

from suite.inference.batched_app import create_batched_app
from suite.inference.serial_app import create_serial_app
from suite.settings import Settings

FACTORIES = {"batched": create_batched_app, "serial": create_serial_app}


def create_app(settings: Settings, role: str = "chat") -> FastAPI:
    """The inference service for the 'chat' or 'code' model, on the configured engine."""
    if role not in ("chat", "code"):
        raise ValueError(f"role must be 'chat' or 'code' (got {role!r})")
    return FACTORIES[settings.inference.engine](settings, role)


__all__ = ["create_app"]

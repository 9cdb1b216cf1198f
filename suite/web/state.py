"""Route dependencies that read a service object from ``app.state`` (built in the app's lifespan)."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, Request


def from_state(name: str) -> Any:
    """``Annotated[Service, from_state("name")]`` hands a route ``request.app.state.name``."""

    def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    get.__name__ = f"state_{name}"
    return Depends(get)

"""The table of services: name, port, phase, app factory, dependencies and probe paths.

Order in ``SERVICES`` is dependency order; ``for_phase`` keeps it. Adding a service is adding a row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    phase: int
    factory: str  # "module:function"; called as function(settings, **kwargs) -> ASGI app
    kwargs: dict[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    health_path: str = "/health"
    ready_path: str = "/ready"
    description: str = ""
    # environment defaults the process needs before its factory's module is imported (read from the
    # settings; a value already in the environment wins): ``python -m suite.serve`` applies them
    env: Callable[[Any], dict[str, str]] | None = None

    def load_factory(self) -> Callable[..., Any]:
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)


def inference_env(settings: Any) -> dict[str, str]:
    """libgomp reads GOMP_SPINCOUNT once, when llama.cpp loads it (``inference.omp_spincount``)."""
    return {"GOMP_SPINCOUNT": str(settings.inference.spincount())}


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("inference-chat", 1, "suite.inference.app:create_app", {"role": "chat"}, env=inference_env,
                description="OpenAI surface over the continuous-batching engine (default) or llama_cpp.server, chat model"),
    ServiceSpec("inference-code", 1, "suite.inference.app:create_app", {"role": "code"}, env=inference_env,
                description="OpenAI surface over the continuous-batching engine (default) or llama_cpp.server, code model"),
    ServiceSpec("gateway", 1, "suite.gateway.app:create_app",
                depends_on=("inference-chat", "inference-code"),
                description="OpenAI-compatible router with retries and fallback"),
    ServiceSpec("embedding", 2, "suite.embedding.app:create_app",
                description="sentence-transformers embeddings with micro-batching"),
    ServiceSpec("rag", 2, "suite.rag.app:create_app", depends_on=("embedding", "gateway"),
                description="index and query over Qdrant, answers through the gateway"),
    ServiceSpec("memory", 3, "suite.memory.app:create_app", ready_path="/ready",
                description="SQLite projects, notes and search, with its maintainer"),
    ServiceSpec("tools", 3, "suite.tools.app:create_app", depends_on=("memory", "rag", "gateway"),
                description="MCP tool server with RBAC, approvals, rate limits, sandbox, audit"),
)

BY_NAME = {spec.name: spec for spec in SERVICES}


def get(name: str) -> ServiceSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown service {name!r}; known: {', '.join(BY_NAME)}") from None


def for_phase(phase: int) -> list[ServiceSpec]:
    """Every service of phases 1..phase, in dependency order."""
    if phase not in (1, 2, 3):
        raise ValueError(f"phase must be 1, 2 or 3 (got {phase})")
    return [spec for spec in SERVICES if spec.phase <= phase]

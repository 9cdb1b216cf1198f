"""Our own suite as a target, generated from ``Settings``: the one path both kinds of run take.

Every service of the phase is a part of kind ``suite`` named after the service (``gateway``,
``inference-chat``, ...; the check ids the runbooks always had), reached at ``settings.url(name)``,
authenticated with the run's keys (``harness.keys``), with every permission: it is the stack the run
brings up itself, and its kills go through the suite's supervisor.
"""

from __future__ import annotations

from typing import Any

from harness.target.model import Auth, EmbeddingPart, GatewayPart, InferencePart, Part, Target
from suite import services
from suite.settings import Settings

ALL = {"allow_write": True, "allow_load": True, "allow_kill": True, "allow_restore": True}


def _part(cls: type[Part], settings: Settings, name: str, **extra: Any) -> Part:
    spec = services.get(name)
    return cls(name=name, kind="suite", base_url=settings.url(name), auth=Auth(run_keys=True),
               health_path=spec.health_path, ready_path=spec.ready_path,
               metrics_url=settings.url(name) + "/metrics", **ALL, **extra)


def suite_target(settings: Settings, phase: int = 3) -> Target:
    """The suite's services of phases 1..``phase`` as a target."""
    present = {s.name for s in services.for_phase(phase)}
    chat, code = settings.inference.chat.alias, settings.inference.code.alias
    data: dict[str, Any] = {"name": f"suite (phase {phase}, {settings.profile} profile)"}
    data["gateway"] = _part(GatewayPart, settings, "gateway", models=[chat, code], chat_model=chat, code_model=code,
                            embedding_model="embedding" if "embedding" in present else None,
                            fallbacks=dict(settings.gateway.fallback))
    data["inference"] = [_part(InferencePart, settings, "inference-chat", models=[chat], gateway_model=chat),
                         _part(InferencePart, settings, "inference-code", models=[code], gateway_model=code)]
    if "embedding" in present:
        data["embedding"] = _part(EmbeddingPart, settings, "embedding", models=["embedding"], dimension=384)
    if "rag" in present:
        data["rag"] = _part(Part, settings, "rag")
        if settings.rag.qdrant_url:
            auth = Auth(header="api-key", scheme="", file=settings.rag.qdrant_api_key_file) \
                if settings.rag.qdrant_api_key_file else None
            data["vector_store"] = Part(name="qdrant", kind="qdrant", base_url=settings.rag.qdrant_url, auth=auth)
    if "memory" in present:
        data["memory"] = _part(Part, settings, "memory")
    if "tools" in present:
        data["mcp"] = _part(Part, settings, "tools")
    target = Target(**data)
    target._source, target._digest, target._ours, target._phase = "settings", "", True, phase
    target._settings = settings
    return target

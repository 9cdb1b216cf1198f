"""The gateway's HTTP routes; the logic is ``suite.gateway.service.Gateway`` on ``app.state.gateway``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response

from suite.gateway.routing import ALIASES
from suite.gateway.service import Gateway
from suite.web import from_state
from suite.web.disconnect import until_disconnected

router = APIRouter()
GatewayDep = Annotated[Gateway, from_state("gateway")]


def relayed_body(what: str, fields: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """OpenAPI for a body the gateway relays unchanged: it reads ``fields`` only; the upstream's own
    ``/openapi.json`` describes (and validates) every other field."""
    schema = {"type": "object", "required": list(required), "additionalProperties": True,
              "description": f"{what}, relayed unchanged", "properties": fields}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


COMPLETION = {"model": {"type": "string", "enum": list(ALIASES), "description": "a model alias of GET /v1/models"},
              "stream": {"type": "boolean", "default": False}}


@router.post("/v1/chat/completions", openapi_extra=relayed_body(
    "an OpenAI chat completion request, to the upstream of its model", COMPLETION, ("model",)))
async def chat_completions(request: Request, gateway: GatewayDep) -> Response:
    return await until_disconnected(request, gateway.forward("/v1/chat/completions",
                                                             gateway.parse(await request.body())))


@router.post("/v1/completions", openapi_extra=relayed_body(
    "an OpenAI completion request, to the upstream of its model", COMPLETION, ("model",)))
async def completions(request: Request, gateway: GatewayDep) -> Response:
    return await until_disconnected(request, gateway.forward("/v1/completions", gateway.parse(await request.body())))


@router.post("/v1/embeddings", openapi_extra=relayed_body(
    "an OpenAI embeddings request, to the embedding service", {"input": {"description": "text(s) to embed"}}))
async def embeddings(request: Request, gateway: GatewayDep) -> Response:
    return await gateway.embeddings(await request.body())


@router.get("/v1/models")
async def models(gateway: GatewayDep) -> dict[str, Any]:
    return gateway.models()

"""The gateway's HTTP routes; the logic is ``suite.gateway.service.Gateway`` on ``app.state.gateway``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Response

from suite.gateway.service import Gateway
from suite.web import from_state

router = APIRouter()
GatewayDep = Annotated[Gateway, from_state("gateway")]


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, gateway: GatewayDep) -> Response:
    return await gateway.forward("/v1/chat/completions", gateway.parse(await request.body()))


@router.post("/v1/completions")
async def completions(request: Request, gateway: GatewayDep) -> Response:
    return await gateway.forward("/v1/completions", gateway.parse(await request.body()))


@router.post("/v1/embeddings")
async def embeddings(request: Request, gateway: GatewayDep) -> Response:
    return await gateway.embeddings(await request.body())


@router.get("/v1/models")
async def models(gateway: GatewayDep) -> dict[str, Any]:
    return gateway.models()

"""Stop work nobody waits for: cancel a request's handler when its client goes away.

Starlette does not cancel a plain (non-streamed) handler whose client disconnected. For a handler
that waits on an upstream, that leaves the upstream working for nobody: measured in a load run, an
inference service kept four slots generating for RAG requests whose clients had timed out, and the
next scenario waited behind them. ``until_disconnected`` races the handler's work against the
client's connection; cancelling the work closes its upstream connection, which the upstream sees in
turn (the inference service polls for it and frees the sequence's slot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")

POLL_S = 0.5


class ClientGone(Exception):
    """The client disconnected before the answer was ready (nobody reads the response)."""


async def until_disconnected(request: Request, work: Awaitable[T], poll_s: float = POLL_S) -> T:
    """The result of ``work``, unless the client disconnects first: then ``work`` is cancelled and
    ``ClientGone`` raised (the response is never sent)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                raise ClientGone(f"{request.method} {request.url.path}: client disconnected")
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


__all__ = ["ClientGone", "until_disconnected"]

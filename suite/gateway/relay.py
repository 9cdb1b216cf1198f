"""A streamed answer relayed to the client: whole SSE events only, and a well-formed end when the
upstream breaks off.

The gateway commits to a replica once the stream's first event has arrived (``first_event``): an
upstream that dies before it is not yet visible to the client, so the request moves to another
replica. After that the bytes are passed on as they come, cut at event boundaries, so that when the
upstream dies mid-answer the client gets the events that were whole, then one ``data: {"error": ...}``
event (the shape OpenAI's streams use, which the official SDKs raise as an ``APIError``) and a cleanly
ended body — not a hung connection, and not a half event glued to an error.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import aiohttp

BROKEN = (aiohttp.ClientError, asyncio.TimeoutError)


def is_sse(content_type: str | None) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() == "text/event-stream"


def boundary(data: bytes) -> int:
    """The end of the last whole SSE event in ``data`` (0 when there is none)."""
    lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0)


async def first_event(resp: aiohttp.ClientResponse, sse: bool) -> bytes:
    """The stream's bytes up to its first whole event (its first chunk when not SSE; ``b""`` when the
    body ended without one). Raises ``BROKEN`` when the upstream breaks off first."""
    data = b""
    while True:
        chunk = await resp.content.readany()
        if not chunk:
            return data
        data += chunk
        if not sse or boundary(data):
            return data


def error_event(message: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": "upstream_error", "code": code}}
    return f"data: {json.dumps(body)}\n\n".encode()


async def relay(resp: aiohttp.ClientResponse, first: bytes, *, name: str,
                on_break: Callable[[BaseException], None], on_end: Callable[[], None]) -> AsyncIterator[bytes]:
    """``first`` then the rest of ``resp``'s body. A break upstream calls ``on_break`` and, for an SSE
    stream, ends with an error event (any other body is cut: its client must not take it for whole).
    A relay cut short (the client went away) closes the upstream connection, which the inference
    service sees and frees the slot. ``on_end`` runs once, however it ended."""
    sse = is_sse(resp.headers.get("content-type"))
    try:
        held = b""
        if sse:
            cut = boundary(first)
            first, held = first[:cut], first[cut:]
        if first:
            yield first
        try:
            async for chunk in resp.content.iter_any():
                if not sse:
                    yield chunk
                    continue
                held += chunk
                cut = boundary(held)
                if cut:
                    out, held = held[:cut], held[cut:]
                    yield out
        except BROKEN as exc:
            on_break(exc)
            if not sse:
                raise
            why = "no bytes within gateway.read_timeout_s" if isinstance(exc, asyncio.TimeoutError) \
                else f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            yield error_event(f"upstream {name} broke off mid-stream ({why}); the answer is incomplete",
                              "upstream_broke_off")
            return
        if held:
            yield held
        resp.release()  # read to the end: the connection goes back to the pool
    finally:
        resp.close()
        on_end()

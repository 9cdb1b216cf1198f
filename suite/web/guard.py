"""The request guard every service gets (``instrument`` installs it): size, JSON shape and text
encoding are checked at the edge, before any route, key lookup, store or model sees a request.

1. **Size.** A ``Content-Length`` over the service's limit is answered 413 before a byte of the body
   is read; a body without one (chunked) is counted as it arrives and refused with 413 the moment it
   passes the limit, so nothing past the limit is ever buffered.
2. **JSON, UTF-8.** Every API of the suite takes JSON, so a non-empty body must be: valid UTF-8
   (surrogates encoded as UTF-8 included), JSON without ``NaN``/``Infinity`` literals or numbers
   that overflow a float, integers within int64 (no schema of ours takes more; SQLite and llama.cpp
   cannot), nesting no deeper than ``max_json_depth``, at most ``max_json_values`` values, and no
   string or key holding a lone surrogate (``"\\ud800"`` is valid JSON but no valid text). Anything
   else is a 400 in the common error shape, with a message that says what was wrong.
3. The body is then handed on unchanged: the route parses it again with its own model (a second
   parse costs microseconds per KB; keeping the guard a plain filter keeps every route as it is).

Parsing costs time per value, and ``json.loads`` holds the GIL while it runs, so a worker thread
alone would not keep the event loop free: 16 MiB of ``[],[],…`` takes ~1-4 s to parse on this box.
So the structural characters (``,`` ``[`` ``{``) are counted first, at C speed (~10 ms per MiB);
a body with more than ``STRUCTURE_FACTOR × max_json_values`` of them is refused unparsed. Commas
inside strings count too, hence the factor: prose has about one per 60 bytes, so a 16 MiB document
passes. What is then parsed is bounded, and bodies over ``OFFLOAD_BYTES`` are parsed and walked in
a worker thread (the walk is Python code, which yields the GIL to the event loop every few ms).

Plain ASGI (not ``BaseHTTPMiddleware``), like ``ObserveRequests``: nothing is added to the path of a
streamed response. Order at the edge (``instrument``): ``ObserveRequests`` (request id, access log,
metrics — so refusals are logged and counted) → ``TransportGuard`` (headers only) → ``AuthLayer``
(headers only) → this guard → routes: a request the transport checks or the key check refuse is
never read at all, so only a caller with a valid key for the route can make a service read a body.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from suite.web.errors import error_response

if TYPE_CHECKING:
    from suite.settings import Settings

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
OFFLOAD_BYTES = 64 * 1024
STRUCTURE_FACTOR = 4
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@dataclass(frozen=True)
class RequestLimits:
    """The guard's limits for one service (defaults as ``Settings.guard``'s)."""

    max_body_bytes: int = 1024 * 1024
    max_json_depth: int = 32
    max_json_values: int = 200_000

    @classmethod
    def for_service(cls, settings: Settings, service: str) -> RequestLimits:
        g = settings.guard
        return cls(g.body_limit(service), g.max_json_depth, g.max_json_values)


class BadRequest(Exception):
    """What the guard refuses: the status, a message for the client and an error code."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


# -- the JSON rules (pure functions) --------------------------------------------------------------
def _no_constants(name: str) -> Any:
    raise BadRequest(400, f"JSON number {name} is not allowed: send finite numbers only", "non_finite_number")


def check_json(body: bytes, limits: RequestLimits) -> None:
    """Raise ``BadRequest`` unless ``body`` is JSON the suite's services may safely parse and use."""
    structure = body.count(b",") + body.count(b"[") + body.count(b"{")
    if structure > STRUCTURE_FACTOR * limits.max_json_values:
        raise BadRequest(400, f"JSON body has more than {limits.max_json_values} values", "json_too_large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(400, f"request body is not valid UTF-8 (byte {exc.start}): send JSON in UTF-8",
                         "invalid_utf8") from None
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise BadRequest(400, f"JSON nested deeper than {limits.max_json_depth} levels", "json_too_deep") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(400, f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
                              f"{exc.colno}); send a JSON object", "invalid_json") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise BadRequest(400, f"request body has a number out of range: {str(exc)[:120]}",
                         "number_out_of_range") from None
    check_values(value, limits)


def check_values(value: Any, limits: RequestLimits) -> None:
    """Depth, count, finiteness, int64 range and lone surrogates of a parsed JSON value (iteratively)."""
    stack: list[tuple[Any, int, tuple | None]] = [(value, 1, None)]  # (value, depth, (parent path, key))
    seen = 0
    while stack:
        item, depth, path = stack.pop()
        seen += 1
        if seen > limits.max_json_values:
            raise BadRequest(400, f"JSON body has more than {limits.max_json_values} values", "json_too_large")
        if isinstance(item, str):
            if LONE_SURROGATE.search(item):
                raise BadRequest(400, f"{_where(path)}: string holds a lone UTF-16 surrogate (not valid text)",
                                 "invalid_text")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise BadRequest(400, f"{_where(path)}: integer out of the 64-bit range", "number_out_of_range")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise BadRequest(400, f"{_where(path)}: number overflows a 64-bit float", "non_finite_number")
        elif isinstance(item, (list, dict)):
            if depth >= limits.max_json_depth:
                raise BadRequest(400, f"JSON nested deeper than {limits.max_json_depth} levels", "json_too_deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    if LONE_SURROGATE.search(key):
                        raise BadRequest(400, f"{_where(path)}: key holds a lone UTF-16 surrogate (not valid "
                                              "text)", "invalid_text")
                    stack.append((child, depth + 1, (path, key)))
            else:
                stack.extend((child, depth + 1, (path, i)) for i, child in enumerate(item))


def _where(path: tuple | None) -> str:
    """``$.messages[2].content`` for a path kept as nested (parent, key) pairs."""
    keys = []
    while path is not None:
        path, key = path
        keys.append(f"[{key}]" if isinstance(key, int) else "." + LONE_SURROGATE.sub("?", key)[:40])
    return "$" + "".join(reversed(keys))


# -- the middleware -------------------------------------------------------------------------------
class RequestGuard:
    """ASGI middleware: refuse oversized or malformed bodies; pass everything else on unchanged."""

    def __init__(self, app, limits: RequestLimits | None = None) -> None:
        self.app = app
        self.limits = limits or RequestLimits()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.limits.max_body_bytes)
            if body:
                if len(body) > OFFLOAD_BYTES:
                    await asyncio.to_thread(check_json, body, self.limits)
                else:
                    check_json(body, self.limits)
        except BadRequest as exc:
            await error_response(exc.status, exc.message, code=exc.code,
                                 headers={"Connection": "close"} if exc.status == 413 else None
                                 )(scope, receive, send)
            return
        if body is None:  # nothing to replay: no body was announced
            await self.app(scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    return (f"request body is {'more than ' if at_least else ''}{size} bytes; this service accepts at most "
            f"{limit} (settings: guard.max_body_bytes / guard.service_max_body_bytes)")


async def read_body(scope, receive, limit: int) -> bytes | None:
    """The whole body of an HTTP request, or None when it announces none; ``BadRequest`` (413) as
    soon as it is known to pass ``limit`` — from ``Content-Length`` before reading, else while reading."""
    headers = dict(scope.get("headers") or ())
    length = headers.get(b"content-length")
    chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise BadRequest(400, "Content-Length is not a number", "invalid_content_length") from None
        if declared > limit:
            raise BadRequest(413, _too_large(declared, limit), "body_too_large")
        if declared == 0:
            return None
    elif not chunked and scope["method"] not in BODY_METHODS:
        return None
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BadRequest(413, _too_large(size, limit, at_least=True), "body_too_large")
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(parts)


def replay(body: bytes, receive):
    """A ``receive`` that gives the buffered body once, then the client's own messages (disconnect)."""
    sent = False

    async def again():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


__all__ = ["BadRequest", "RequestGuard", "RequestLimits", "check_json", "check_values", "read_body", "replay"]

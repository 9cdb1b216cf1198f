"""An official MCP client session (``mcp`` SDK v1, Streamable HTTP) with the caller's key: what the
tools smoke check and the tests use to speak MCP exactly as a user's agent would."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from mcp import ClientSession

from harness.httpclient import verify


@contextlib.asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    """An initialized ``ClientSession`` on ``url`` (``…/mcp``) sending ``headers`` on every request."""
    from mcp.client import streamable_http

    if hasattr(streamable_http, "streamable_http_client"):  # mcp >= 1.24; the older name warns
        # the SDK's create_mcp_http_client (redirects off: its transport follows them within the
        # origin), with the stack's CA verifying an https URL
        http = httpx.AsyncClient(headers=headers, verify=verify(),
                                 timeout=httpx.Timeout(30.0, read=300.0))
        transport = streamable_http.streamable_http_client(url, http_client=http)
    else:  # pragma: no cover - older SDKs
        http = None
        transport = streamable_http.streamablehttp_client(url, headers=headers)
    try:
        async with transport as (read, write, _), ClientSession(read, write) as session:
            await session.initialize()
            yield session
    finally:
        if http is not None:
            await http.aclose()

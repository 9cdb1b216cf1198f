"""One pooled HTTP client per thread for the harness's own calls to the stack.

httpx's module-level functions (``httpx.get``, ``httpx.post``, ``httpx.request``) build a new
``Client`` for every call, and with it a TLS context that loads the CA bundle: about 30 ms of CPU a
call on a 2-core box, even for plain-HTTP loopback. The RBAC matrix sends ~500 requests and paid
~17 s for that alone. A client per thread (httpx clients are not documented as thread-safe) keeps
connections alive and builds its TLS context once; every call still passes its own timeout.
"""

from __future__ import annotations

import threading

import httpx

_local = threading.local()


def client() -> httpx.Client:
    """This thread's client (created on first use, re-created if closed)."""
    c: httpx.Client | None = getattr(_local, "client", None)
    if c is None or c.is_closed:
        c = _local.client = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0))
    return c

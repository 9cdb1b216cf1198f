"""One pooled HTTP client per thread for the harness's own calls to the stack, verifying its TLS.

httpx's module-level functions (``httpx.get``, ``httpx.post``, ``httpx.request``) build a new
``Client`` for every call, and with it a TLS context that loads the CA bundle: about 30 ms of CPU a
call on a 2-core box, even for plain-HTTP loopback. The RBAC matrix sends ~500 requests and paid
~17 s for that alone. A client per thread (httpx clients are not documented as thread-safe) keeps
connections alive and builds its TLS context once; every call still passes its own timeout.

A stack that serves TLS (``tls.enabled``, or parts on other hosts at https URLs) is verified against
the CA of the settings this process sees (``tls.ca_file``, from the ``SUITE_*`` environment a
pipeline run hands its kernels): ``verify()``. Building ``Settings()`` costs tens of milliseconds,
so the CA's path is looked up once per distinct ``SUITE_*`` environment.
"""

from __future__ import annotations

import os
import ssl
import threading
from functools import lru_cache

import httpx

from suite import tls
from suite.settings import Settings

_local = threading.local()


@lru_cache(maxsize=16)
def _ca_of(environment: tuple[tuple[str, str], ...]) -> str:
    return str(Settings().ca_file)


def verify(settings: Settings | None = None) -> ssl.SSLContext:
    """The context that verifies the stack's servers: ``settings``' CA, else this process's."""
    if settings is not None:
        return tls.client_context(settings)
    ca = _ca_of(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("SUITE_"))))
    return tls.trust(ca)


def client() -> httpx.Client:
    """This thread's client (created on first use, re-created if closed or the stack's CA changed)."""
    context = verify()
    c: httpx.Client | None = getattr(_local, "client", None)
    if c is None or c.is_closed or getattr(_local, "context", None) is not context:
        c = _local.client = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0), verify=context)
        _local.context = context
    return c

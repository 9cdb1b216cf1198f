"""What the trust boundary costs per request: the transport guard and the auth layer in front of a
trivial ASGI app, in process (no network, no model), with a key that is in the verification cache
(the inference hot path's case) and one that is re-read from the key store every time (cache off).

    python benchmarks/auth_overhead.py [--requests 20000] [--write]

``--write`` records the figures in ``docs/benchmarks.md`` (section "Auth overhead").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _docs import write_section

from suite.auth.layer import AuthLayer
from suite.settings import Settings
from suite.testing import stack_keys
from suite.web.transport import TransportGuard


async def bare_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


def scope_for(key: str | None) -> dict:
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": headers,
            "client": ("127.0.0.1", 5000), "query_string": b"", "root_path": ""}


async def per_request_us(app, key: str | None, n: int) -> float:
    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(_message):
        return None

    scope = scope_for(key)
    await app(dict(scope), receive, send)  # warm: opens the store, fills the cache
    t0 = time.perf_counter()
    for _ in range(n):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - t0) / n * 1e6


def run(n: int, repeat: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="auth-bench-"))
    cached = Settings(data_dir=tmp, auth={"cache_s": 300})
    uncached = Settings(data_dir=tmp, auth={"cache_s": 0})
    key = stack_keys(cached)["guest"]

    def stack(settings: Settings):
        return TransportGuard(AuthLayer(bare_app, service="gateway", settings=settings), settings=settings)

    rows = {"bare ASGI app": lambda: per_request_us(bare_app, None, n),
            "+ transport guard + auth layer, key cached": lambda: per_request_us(stack(cached), key, n),
            "+ transport guard + auth layer, key read from the store": lambda: per_request_us(stack(uncached), key, n)}
    figures = {label: statistics.median(asyncio.run(fn()) for _ in range(repeat)) for label, fn in rows.items()}
    return {"requests": n, "repeat": repeat, "figures": figures, "python": platform.python_version(),
            "load_average": [round(x, 1) for x in os.getloadavg()], "measured_at": time.strftime("%Y-%m-%d %H:%M")}


def markdown(result: dict) -> str:
    base = result["figures"]["bare ASGI app"]
    lines = ["| path | µs per request | added |", "|---|---|---|"]
    for label, us in result["figures"].items():
        lines.append(f"| {label} | {us:.1f} | {us - base:+.1f} |")
    lines.append("")
    lines.append(f"{result['requests']} in-process requests, median of {result['repeat']}; Python "
                 f"{result['python']}, load average {result['load_average']} at {result['measured_at']}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="record the figures in docs/benchmarks.md")
    args = parser.parse_args(argv)
    result = run(args.requests, args.repeat)
    print(markdown(result))
    if args.write:
        write_section("Auth overhead", markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

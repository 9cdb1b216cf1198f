"""Flame graphs of the batched inference service under N concurrent streams, sampled with py-spy.

    .venv/bin/python benchmarks/inference_profile.py [--rev REV] [--streams 8] [--seconds 20]
        [--py-spy PATH] [--out docs/profiles] [--name after]

Starts ``python -m suite.serve inference-chat`` (this tree, or ``git archive REV``) as the concurrency
benchmark configures it, keeps ``--streams`` streamed completions running, and records two py-spy
profiles of the service process one after the other: every thread with native frames
(``--threads --native``: the event loop, the engine thread, where llama.cpp spends its time) and only
the samples of the thread that holds the GIL (``--threads --gil``: what Python work competes for
it). Writes ``NAME-native.svg`` and ``NAME-gil.svg`` and prints the tok/s the streams got meanwhile.
py-spy comes from the ``bench`` extra (``py-spy`` on PATH, or ``--py-spy``); it needs ptrace rights
over the service (root, or ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from inference_ab import export
from inference_concurrency import PROMPT, ROOT, suite_service

from suite.settings import Settings


async def keep_streaming(base: str, streams: int, tokens: int, stop: threading.Event, counted: list[int]) -> None:
    """``streams`` clients, each sending one streamed completion after another until ``stop``."""
    body = {"model": "chat", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True}

    async def client(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            async with http.stream("POST", "/v1/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        counted[0] += 1

    async with httpx.AsyncClient(base_url=base, timeout=600, headers=getattr(base, "headers", {}),
                                 limits=httpx.Limits(max_keepalive_connections=0)) as http:
        await asyncio.gather(*(client(http) for _ in range(streams)))


def record(py_spy: str, pid: int, seconds: int, rate: int, flags: list[str], svg: Path) -> None:
    subprocess.run([py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(rate),
                    "--threads", *flags, "--format", "flamegraph", "--output", str(svg)],
                   check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default=".", help="git revision to profile, '.' (default) for this tree")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=20, help="length of each of the two recordings")
    ap.add_argument("--rate", type=int, default=50, help="samples per second")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--py-spy", default=shutil.which("py-spy"))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "profiles")
    ap.add_argument("--name", default="batched")
    args = ap.parse_args(argv)
    if not args.py_spy:
        ap.error("py-spy not found: install the bench extra or pass --py-spy")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.out.mkdir(parents=True, exist_ok=True)
    model = Settings().model_path("chat")
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp, contextlib.ExitStack() as stack:
        root = ROOT if args.rev == "." else export(args.rev, Path(tmp) / "src")
        base = stack.enter_context(suite_service("batched", args.threads, args.slots, Path(tmp), model, root=root))
        stop, counted = threading.Event(), [0]
        load = threading.Thread(target=asyncio.run, daemon=True,
                                args=(keep_streaming(base, args.streams, args.tokens, stop, counted),))
        load.start()
        time.sleep(3)  # past the first prompts
        t0, n0 = time.perf_counter(), counted[0]
        for kind, flags in (("native", ["--native"]), ("gil", ["--gil"])):
            record(args.py_spy, base.pid, args.seconds, args.rate, flags, args.out / f"{args.name}-{kind}.svg")
        rate = (counted[0] - n0) / (time.perf_counter() - t0)
        stop.set()
        load.join(120)
    sys.stdout.write(f"{args.name}: {args.streams} streams, {rate:.1f} chunks/s while profiled, load average "
                     f"{os.getloadavg()[0]:.1f}; wrote {args.out}/{args.name}-native.svg and -gil.svg\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

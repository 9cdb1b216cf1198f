"""The gateway's own cost per relayed token: its CPU per streamed chunk, this tree against another revision.

    .venv/bin/python benchmarks/gateway_relay.py [--base HEAD~1] [--streams 8] [--tokens 256] [--rounds 5] [--write]

A paced SSE source stands in for inference-chat: each of ``--streams`` simultaneous streamed
completions gets a chunk like the service's every ``--interval`` seconds (0.06 s at 8 streams is
the ~130 tok/s inference-chat streams on the CPU default). So the figure is the gateway's alone,
free of the model's run-to-run noise; what the hop costs end to end (tok/s through the gateway
against inference-chat directly) is ``inference_concurrency.py``'s gateway row. Gateway A
(``--base``, from ``git archive``, or ``.``) and B (this tree) run at once from ``python -m
suite.serve gateway`` with default settings on free ports, each with its own source; turns
alternate A B / B A. The gateway's CPU is read from ``/proc`` (user + system, all its threads).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from _docs import write_section
from inference_ab import export
from inference_concurrency import ROOT, level, serve, serving

from suite.settings import Settings
from suite.testing import auth, free_port_offset

SECTION = "Gateway relay"
CHUNK = ("data: " + json.dumps({"id": "cmpl-0", "object": "text_completion", "created": 0, "model": "chat",
                                "choices": [{"text": " word", "index": 0, "logprobs": None,
                                             "finish_reason": None}]}) + "\n\n").encode()
DONE = b"data: [DONE]\n\n"


async def paced_source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, interval: float) -> None:
    """One HTTP/1.1 connection: every POST is answered with ``max_tokens`` chunked SSE events."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            tokens = json.loads(await reader.readexactly(length)).get("max_tokens", 16)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(tokens):
                await asyncio.sleep(interval)
                writer.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
            writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(DONE), DONE))
            await writer.drain()
    writer.close()


@contextlib.contextmanager
def gateway(root: Path, tmp: Path, name: str):
    """A gateway from source tree ``root`` with default settings on free ports; yields (settings, URL)."""
    data = tmp / name
    data.mkdir()
    s = Settings(data_dir=data, port_offset=free_port_offset())
    with serving(serve("gateway", s.dump_file(data / "settings.json"), root), s.url("gateway"), "/health") as url:
        url.headers = auth(s, "guest")
        yield s, url


async def rounds(sides: dict, args: argparse.Namespace) -> dict[str, list[float]]:
    sources = [await asyncio.start_server(lambda r, w: paced_source(r, w, args.interval), "127.0.0.1",
                                          s.port("inference-chat")) for s, _ in sides.values()]
    per_chunk: dict[str, list[float]] = {side: [] for side in sides}
    try:
        for i in range(args.rounds):
            for side in ("a", "b") if i % 2 == 0 else ("b", "a"):
                url = sides[side][1]
                before = url.cpu_s()
                r = await level(url, args.streams, args.tokens, {})
                us = (url.cpu_s() - before) * 1e6 / (r["tokens"] + 4)  # the warm-up's 4 chunks count too
                per_chunk[side].append(us)
                sys.stdout.write(f"round {i + 1} {side.upper()}: {r['tok_s']:.1f} chunks/s relayed, gateway CPU "
                                 f"{us:.0f} µs per chunk (load {os.getloadavg()[0]:.1f})\n")
    finally:
        for src in sources:
            src.close()
    return per_chunk


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="git revision for A, or '.' for this tree")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256, help="chunks per stream")
    ap.add_argument("--interval", type=float, default=0.06, help="seconds between a stream's chunks")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="write the result into docs/benchmarks.md")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its gateways
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-relay-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        root_a = ROOT if args.base == "." else export(args.base, tmp / "a-src")
        sides = {"a": stack.enter_context(gateway(root_a, tmp, "a")), "b": stack.enter_context(gateway(ROOT, tmp, "b"))}
        per_chunk = asyncio.run(rounds(sides, args))
    a, b = (statistics.median(per_chunk[side]) for side in ("a", "b"))
    body = (f"`benchmarks/gateway_relay.py --base {args.base} --streams {args.streams} --tokens {args.tokens} "
            f"--interval {args.interval} --rounds {args.rounds}`, {dt.datetime.now():%Y-%m-%d %H:%M}, "
            f"{os.cpu_count()} cores, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after. "
            f"Gateway CPU per relayed chunk, median of {args.rounds} turns each: A ({args.base}) {a:.0f} µs, "
            f"B (this tree) {b:.0f} µs; B ÷ A = {b / a:.2f}.\n")
    sys.stdout.write(body)
    if args.write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Tokens per second of one request, in-process vs the inference service vs through the gateway.

Same prompt, greedy, same token budget, one run:
  (a) llama-cpp-python in this process
  (b) the inference service directly, non-streaming and streaming
  (c) through the gateway, non-streaming and streaming
  (d) the gateway's added latency on a 1-token completion (median of paired requests)

Usage:  .venv/bin/python benchmarks/inference_throughput.py [--tokens 128] [--repeat 3] [--write]
It brings up its own phase-1 stack on free ports (unless --use-running) and tears it down after.
``--write`` replaces the "Single-request throughput" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import httpx
from _docs import write_section

PROMPT = "Question: What is a health check in software?\nAnswer:"
HEADERS: dict[str, str] = {}  # a key of the stack measured (set in main)


def in_process(model: Path, tokens: int, threads: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(str(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    llm(PROMPT, max_tokens=4, temperature=0)  # warm-up
    llm.reset()
    t0 = time.perf_counter()
    out = llm(PROMPT, max_tokens=tokens, temperature=0)
    dt = time.perf_counter() - t0
    n = out["usage"]["completion_tokens"]
    llm.close()
    return {"tokens": n, "seconds": dt, "tok_s": n / dt}


def non_streaming(base: str, model: str, tokens: int) -> dict:
    t0 = time.perf_counter()
    r = httpx.post(base + "/v1/completions", json={"model": model, "prompt": PROMPT, "max_tokens": tokens,
                                                   "temperature": 0}, timeout=300, headers=HEADERS)
    dt = time.perf_counter() - t0
    r.raise_for_status()
    n = r.json()["usage"]["completion_tokens"]
    return {"tokens": n, "seconds": dt, "tok_s": n / dt}


def streaming(base: str, model: str, tokens: int) -> dict:
    t0 = time.perf_counter()
    ttft, n = None, 0
    with httpx.stream("POST", base + "/v1/completions", timeout=300, headers=HEADERS,
                      json={"model": model, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
                            "stream": True}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if json.loads(line[6:])["choices"][0]["text"]:
                n += 1
                ttft = ttft or time.perf_counter() - t0
    dt = time.perf_counter() - t0
    return {"tokens": n, "seconds": dt, "tok_s": n / dt, "ttft_s": ttft}


def tiny_latency(base: str, model: str) -> float:
    t0 = time.perf_counter()
    httpx.post(base + "/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 1}, timeout=60,
               headers=HEADERS).raise_for_status()
    return time.perf_counter() - t0


def best(runs: list[dict]) -> dict:
    return max(runs, key=lambda r: r["tok_s"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3, help="runs per row; the best is reported")
    ap.add_argument("--pairs", type=int, default=20, help="paired tiny requests for the gateway overhead")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--use-running", action="store_true", help="measure the stack already up (default ports)")
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args()

    from suite.models import install_gemma
    from suite.settings import Settings, default_data_dir
    from suite.supervisor.process import ProcessBackend
    from suite.testing import free_port_offset

    model = install_gemma(default_data_dir() / "models")
    backend = None
    if args.use_running:
        settings = Settings()
    else:
        tmp = Path(tempfile.mkdtemp(prefix="bench-"))
        cfg = {"path": str(model), "n_threads": args.threads, "n_ctx": 1024}
        settings = Settings(data_dir=tmp, port_offset=free_port_offset(), inference={"chat": cfg, "code": dict(cfg)})
        backend = ProcessBackend(settings)
        print("bringing phase 1 up …", flush=True)
        backend.up(1)
    from suite.testing import auth

    HEADERS.update(auth(settings, "guest"))  # measured as served: every request carries a key
    try:
        direct, gateway = settings.url("inference-chat"), settings.url("gateway")
        rows = {}
        print("(a) in-process …", flush=True)
        rows["in-process llama-cpp-python"] = best([in_process(model, args.tokens, args.threads)
                                                    for _ in range(args.repeat)])
        for label, fn, base in (("service, non-streaming", non_streaming, direct),
                                ("service, streaming", streaming, direct),
                                ("gateway, non-streaming", non_streaming, gateway),
                                ("gateway, streaming", streaming, gateway)):
            print(f"{label} …", flush=True)
            fn(base, "chat", 4)
            rows[label] = best([fn(base, "chat", args.tokens) for _ in range(args.repeat)])
        print("gateway overhead …", flush=True)
        deltas, directs = [], []
        for _ in range(args.pairs):
            d = tiny_latency(direct, "chat")
            g = tiny_latency(gateway, "chat")
            directs.append(d)
            deltas.append(g - d)
    finally:
        if backend:
            backend.down()

    ref = rows["in-process llama-cpp-python"]["tok_s"]
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
             f"{args.threads} threads; Gemma 3 270M Q4_K_M; {args.tokens} tokens greedy; best of {args.repeat}; "
             f"{date.today().isoformat()}.", "",
             "| path | tokens | seconds | tok/s | vs in-process | TTFT |", "|---|---|---|---|---|---|"]
    for label, r in rows.items():
        ttft = f"{r['ttft_s'] * 1000:.0f} ms" if r.get("ttft_s") else ""
        lines.append(f"| {label} | {r['tokens']} | {r['seconds']:.2f} | {r['tok_s']:.1f} | "
                     f"{r['tok_s'] / ref:.2f}× | {ttft} |")
    lines += ["", f"1-token completion: direct median {statistics.median(directs) * 1000:.1f} ms; gateway adds "
              f"median {statistics.median(deltas) * 1000:.1f} ms (p90 "
              f"{sorted(deltas)[int(0.9 * (len(deltas) - 1))] * 1000:.1f} ms) over {args.pairs} pairs."]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section("Single-request throughput", table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU profile proven once: offload, GPU memory and 8 streams (``scripts/gpu_check.sh`` runs it).

    SUITE_PROFILE=gpu .venv/bin/python benchmarks/gpu_proof.py [--streams 8] [--tokens 128] [--repeat 3] [--write]

Brings up phase 1 (both inference services and the gateway) with the process backend on the gpu
profile — ``n_gpu_layers = -1``, every layer on the GPU — in a scratch data dir whose ``models`` is the
default one (the bundled Gemma unless ``SUITE_INFERENCE__CHAT__PATH`` / ``__CODE__PATH`` name GGUFs),
then records: the GPU inventory through NVML, the offload check ``02_health`` runs (llama.cpp's own
layer placement from each service's ``/health``, and NVML's memory of each inference process), and
``--streams`` concurrent streamed completions, ``--repeat`` rounds, directly to inference-chat and
through the gateway (aggregate tok/s, time to first token; the median round). ``--write`` puts the
figures in the "GPU profile" section of docs/benchmarks.md. Exit 1 when the offload check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _docs import write_section
from inference_concurrency import PROMPT, level_stats, median_run, one_stream

from harness.envcheck.gpu import read_gpus
from harness.offload import check_offload
from suite.settings import Settings
from suite.supervisor.process import ProcessBackend
from suite.testing import auth, free_port_offset

SECTION = "GPU profile"


async def streams(base: str, headers: dict, n: int, tokens: int) -> dict:
    body = {"model": "chat", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True}
    async with httpx.AsyncClient(base_url=base, timeout=600, headers=headers) as client:
        await one_stream(client, "/v1/completions", {**body, "max_tokens": 4})  # warm-up
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, "/v1/completions", body) for _ in range(n)))
        wall = time.perf_counter() - t0
    return level_stats(n, [t for t, _ in results if t is not None], sum(k for _, k in results), wall)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    base = Settings()
    if base.profile != "gpu":
        print("run with SUITE_PROFILE=gpu (scripts/gpu_check.sh sets it)", file=sys.stderr)
        return 2
    inventory = read_gpus()
    with tempfile.TemporaryDirectory(prefix="gpu-proof-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "models").symlink_to(base.models_dir.resolve())
        settings = base.model_copy(update={"data_dir": data, "port_offset": free_port_offset()}, deep=True)
        backend = ProcessBackend(settings)
        up = time.monotonic()
        backend.up(1, progress=print)
        up_s = time.monotonic() - up
        try:
            offload = check_offload(settings, 1)
            loaded = "; ".join(g.describe() for g in read_gpus().gpus)  # NVML, models loaded
            headers = auth(settings, "guest")
            rows = {}
            for name, target in (("inference-chat", "inference-chat directly"), ("gateway", "through the gateway")):
                runs = [asyncio.run(streams(settings.url(name), headers, args.streams, args.tokens))
                        for _ in range(args.repeat)]
                rows[target] = median_run(runs)
                print(f"{target}: {rows[target]['tok_s']:.1f} tok/s, TTFT p50 {rows[target]['p50'] * 1000:.0f} ms")
        finally:
            backend.down()
    for r in offload:
        print(r)
    ok = all(r.status.value in ("pass", "skip") for r in offload)
    gpus = "; ".join(f"{g.name} ({g.memory_total_mib / 1024:.0f} GiB)" for g in inventory.gpus)
    memory = "; ".join(g.describe() for g in read_gpus().gpus)
    lines = [f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `bash scripts/gpu_check.sh` on {gpus}, "
             f"driver {inventory.driver}, CUDA {inventory.cuda}, llama-cpp-python built for "
             f"sm_{os.environ.get('SUITE_CUDA_ARCH', '?')}; phase 1 ready in {up_s:.0f} s; whole proof "
             f"{time.monotonic() - t0:.0f} s after the build.", "",
             f"NVML with both models loaded: {loaded}; after the stack stopped: {memory}.", "",
             "| offload check | status | measured | detail |", "|---|---|---|---|"]
    lines += [f"| {r.title} | {r.status.value} | {r.measured} | {r.detail[:160]} |" for r in offload]
    lines += ["", f"{args.streams} concurrent streams, {args.tokens} tokens each, greedy; median of {args.repeat} rounds:",
              "", "| target | tok/s | TTFT p50 | TTFT worst |", "|---|---:|---:|---:|"]
    lines += [f"| {t} | {r['tok_s']:.1f} | {r['p50'] * 1000:.0f} ms | {r['worst'] * 1000:.0f} ms |"
              for t, r in rows.items()]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(SECTION, text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

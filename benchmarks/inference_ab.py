"""A/B of the batched inference service: another revision (or other environment) against this tree.

    .venv/bin/python benchmarks/inference_ab.py --base HEAD~1 [--change HEAD] [--streams 8] [--rounds 5]
    .venv/bin/python benchmarks/inference_ab.py --base . --env-b OMP_WAIT_POLICY=PASSIVE

Both services run side by side on free ports (A from ``git archive BASE``, or this tree for
``--base .``; B from this working tree, or ``git archive CHANGE``) and take turns, A B / B A / A B..., each turn one level of
``--streams`` simultaneous streamed completions, so a noisy shared box moves both alike. Prints
each turn, the medians and the B ÷ A ratio of every round (the figure to judge a change by).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from inference_concurrency import ROOT, level, suite_service

from suite.settings import Settings


def export(rev: str, into: Path) -> Path:
    """The tree of ``rev`` in ``into`` (``git archive``: no worktree, nothing in the repository changes)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def env_pairs(pairs: list[str]) -> dict[str, str]:
    return dict(p.split("=", 1) for p in pairs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="HEAD", help="git revision for A, or '.' for this tree")
    ap.add_argument("--change", default=".", help="git revision for B, or '.' (default) for this tree")
    ap.add_argument("--env-a", nargs="*", default=[], metavar="K=V")
    ap.add_argument("--env-b", nargs="*", default=[], metavar="K=V")
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=8)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its servers
    model = Settings().model_path("chat")
    out = sys.stdout
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        root_a = ROOT if args.base == "." else export(args.base, tmp / "a-src")
        root_b = ROOT if args.change == "." else export(args.change, tmp / "b-src")
        bases = {side: stack.enter_context(suite_service("batched", args.threads, args.slots, tmp, model,
                                                         root=root, env=env_pairs(env), name=side))
                 for side, root, env in (("a", root_a, args.env_a), ("b", root_b, args.env_b))}
        out.write(f"A = {args.base} {args.env_a}, B = {args.change} {args.env_b}; {args.streams} streams, "
                  f"{args.tokens} tokens, load average {os.getloadavg()[0]:.1f} at start\n")
        runs: dict[str, list[dict]] = {"a": [], "b": []}
        for i in range(args.rounds):
            for side in ("a", "b") if i % 2 == 0 else ("b", "a"):
                cpu = bases[side].thread_cpu_s()
                r = asyncio.run(level(bases[side], args.streams, args.tokens, {}))
                # CPU per token moves less with the box's load than tok/s does; by thread it says where a
                # change acts (the warm-up's 4 tokens count too: they cost the server CPU)
                after = bases[side].thread_cpu_s()
                for role in cpu:
                    r[role] = (after[role] - cpu[role]) * 1000 / (r["tokens"] + 4)
                r["cpu_ms"] = sum(r[role] for role in cpu)
                runs[side].append(r)
                out.write(f"round {i + 1} {side.upper()}: {r['tok_s']:.1f} tok/s, worst TTFT {r['worst']:.2f} s, "
                          f"server CPU {r['cpu_ms']:.2f} ms/token (event loop {r['loop']:.2f}, engine + "
                          f"workers {r['engine']:.2f}) (load {os.getloadavg()[0]:.1f})\n")
                out.flush()
    ratios = [b["tok_s"] / a["tok_s"] for a, b in zip(runs["a"], runs["b"])]
    cpu = [b["cpu_ms"] / a["cpu_ms"] for a, b in zip(runs["a"], runs["b"])]
    for side in ("a", "b"):
        med = {k: statistics.median(r[k] for r in runs[side]) for k in ("tok_s", "worst", "cpu_ms", "loop",
                                                                          "engine")}
        out.write(f"{side.upper()}: median {med['tok_s']:.1f} tok/s, worst TTFT {med['worst']:.2f} s, server "
                  f"CPU {med['cpu_ms']:.2f} ms/token (event loop {med['loop']:.2f}, engine + workers "
                  f"{med['engine']:.2f})\n")
    out.write(f"B / A tok/s per round: {' '.join(f'{x:.3f}' for x in ratios)}; median {statistics.median(ratios):.3f}\n"
              f"B / A server CPU per token: {' '.join(f'{x:.3f}' for x in cpu)}; median {statistics.median(cpu):.3f}; "
              f"load average {os.getloadavg()[0]:.1f} at end\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

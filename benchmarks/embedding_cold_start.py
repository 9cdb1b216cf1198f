"""The embedding service's cold start: process start → ``/ready`` passes, with each loader.

``embedding.loader = auto`` runs MiniLM-L6 on transformers alone (``suite.embedding.plain``);
``sentence-transformers`` imports the library first (its trainers, cross-encoders, scikit-learn). Each
round starts ``python -m suite.serve embedding`` as the supervisor does, on free ports in a scratch data
dir, and times it until ``/ready`` (one real embed) answers 200; rounds alternate the two loaders so a
busy box slows both alike. Also reported: the time of the two imports alone in a fresh interpreter.

Usage: ``.venv/bin/python benchmarks/embedding_cold_start.py [--rounds 7] [--write-docs]``. Prints a
Markdown table (medians, and every round) with the load average; ``--write-docs`` puts it into
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _docs import write_section

from suite.testing import stack_settings

LOADERS = ("sentence-transformers", "auto")
IMPORTS = {"sentence-transformers": "import sentence_transformers",
           "auto": "import torch; from transformers import AutoModel, AutoTokenizer"}


def cold_start(loader: str, scratch: Path, deadline_s: float = 300.0) -> float:
    """Seconds from spawning the service to its first passing ``/ready``."""
    settings = stack_settings(scratch / loader, embedding={"loader": loader})
    file = settings.dump_file(settings.pid_dir / "settings.json")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "suite.serve", "embedding", "--settings-file", str(file)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        url = settings.url("embedding") + "/ready"
        while time.monotonic() - t0 < deadline_s:
            if proc.poll() is not None:
                raise RuntimeError(f"the embedding service exited {proc.returncode} while starting")
            try:
                if httpx.get(url, timeout=10).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"not ready within {deadline_s:.0f}s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def import_time(loader: str) -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", IMPORTS[loader]], check=True, capture_output=True)
    return time.monotonic() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    starts: dict[str, list[float]] = {n: [] for n in LOADERS}
    imports: dict[str, list[float]] = {n: [] for n in LOADERS}
    with tempfile.TemporaryDirectory(prefix="cold-start-") as tmp:
        for r in range(args.rounds):
            for loader in (LOADERS if r % 2 == 0 else LOADERS[::-1]):
                imports[loader].append(import_time(loader))
                starts[loader].append(cold_start(loader, Path(tmp) / f"r{r}"))
                print(f"round {r + 1}: {loader}: import {imports[loader][-1]:.1f} s, ready after "
                      f"{starts[loader][-1]:.1f} s", flush=True)
    base, new = (statistics.median(starts[n]) for n in LOADERS)
    lines = [f"{args.rounds} alternating rounds, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, "
             f"load average {os.getloadavg()[0]:.2f} at the end.", "",
             "| loader | imports alone (median) | start → /ready (median) | every round (s) |", "|---|---|---|---|"]
    for n in LOADERS:
        lines.append(f"| `{n}` | {statistics.median(imports[n]):.1f} s | {statistics.median(starts[n]):.1f} s | "
                     + ", ".join(f"{x:.1f}" for x in starts[n]) + " |")
    lines += ["", f"auto ÷ sentence-transformers: **{new / base:.2f}** (median start)."]
    text = "\n".join(lines)
    print(text)
    if args.write_docs:
        write_section("Embedding service cold start", text)


if __name__ == "__main__":
    main()

"""Measure the load generator's own ceiling on this box.

Starts a trivial FastAPI app (``GET /health`` -> ``{"status": "ok"}``) under uvicorn on a free
loopback port, then drives it with Locust ``FastHttpUser``s through ``harness.load`` (the same
subprocess runner and raw samples the load runbook uses), with 1 and then N Locust processes.
The figure that matters is the request rate at which the generator saturates: a load scenario whose
rate is far below it is judging the service, not Locust.

    .venv/bin/python benchmarks/load_generator_ceiling.py [--users 10] [--seconds 10] [--processes 2]

Prints a Markdown table for docs/benchmarks.md and writes JSON next to the Locust outputs.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from harness.load.runner import run_scenario
from harness.load.scenarios import SCENARIOS
from harness.load.stats import percentile, window_s
from suite.fsio import write_json
from suite.testing import start_app_process

APP = '''
from fastapi import FastAPI
app = FastAPI()

@app.get("/health")
async def health():
    return {"status": "ok"}
'''


def start_app(folder: Path) -> tuple[subprocess.Popen, str]:
    return start_app_process(folder, "trivial_app", APP)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--processes", type=int, default=2, help="worker processes of the distributed row")
    ap.add_argument("--out", type=Path, default=None, help="folder for Locust outputs (default: a temp dir)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="ceiling-"))
    app, url = start_app(out)
    rows = []
    try:
        for processes in (1, args.processes):
            sc = replace(SCENARIOS["ceiling"], users=args.users, spawn_rate=args.users, duration_s=args.seconds)
            run = run_scenario(sc, url, out / f"p{processes}", processes=processes, warmup_s=1.0)
            ms = [s.ms for s in run.samples]
            span = window_s(run.samples)
            rows.append({"processes": processes, "users": args.users, "requests": len(ms),
                         "failed": sum(not s.ok for s in run.samples),
                         "rps": round(len(ms) / span, 1) if span else 0.0,
                         "p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95),
                         "generator_saturated": run.generator_saturated})
    finally:
        app.terminate()
        app.wait(10)
    meta = {"cores": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg(),
            "seconds": args.seconds}
    write_json(out / "ceiling.json", {"meta": meta, "rows": rows})
    print(f"cores {meta['cores']}, load average {', '.join(f'{x:.1f}' for x in meta['load_average'])}, "
          f"{args.seconds:g} s per row, outputs in {out}\n")
    print("| Locust processes | users | requests | failed | req/s | p50 ms | p95 ms | generator CPU > 90 % |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} | {r['users']} | {r['requests']} | {r['failed']} | {r['rps']} | "
              f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {'yes' if r['generator_saturated'] else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

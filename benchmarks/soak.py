"""Soak: the mixed load for a long time on the CPU default, watching for leaks and drift (not in CI).

A phase-3 stack on free ports (or the running one with ``--use-running``) gets a steady mix for
``--minutes``: ``load/mixed.py`` (code completions, streamed chat, embeddings, RAG queries, weighted
like an assistant's day) at ``--users`` users plus the light ``tools`` scenario (``read_file`` paced
inside its key's budget). Steady on purpose: the pipeline's seed stages change the mix every minute
or two, and a p95 of 30-second windows would follow the stages, not the box. Every ``--sample-s``
seconds, for every service: RSS, open file descriptors and threads of the process serving its port
(psutil), and the p95 of the requests through the gateway that ended in that window (exact, from
the raw client samples).

Verdict, after ``--warmup-min`` (default 5): RSS and fds of each service grow ≤ 5 % (the floor — the
lowest sample — of the first third against the last third: a leak raises the floor, a burst does
not; fds: 5 % or one descriptor), the gateway's p95 drifts ≤ 10 % (the median window of each
third), 0 failed requests.

Usage (the lead runs the 30-minute one on a quiet box)::

    .venv/bin/python benchmarks/soak.py --minutes 30 --write-docs
    .venv/bin/python benchmarks/soak.py --minutes 5 --warmup-min 1 --sample-s 15   # does it work

Writes ``soak.json`` (every sample) and ``soak.svg`` into ``--out`` (default ``data/soak/<time>``),
with ``--write-docs`` the figures into ``docs/benchmarks.md`` and the plot to ``docs/figures/soak.svg``.
Exit 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
from _docs import DOC, write_section

from harness.keys import headers_for, run_keys
from harness.load import runner
from harness.load import samples as samples_mod
from harness.load.plan import load_env
from harness.load.scenarios import SCENARIOS
from harness.load.stats import percentile
from suite import services
from suite.fsio import write_atomic, write_json
from suite.models import install_gemma
from suite.net import port_pid
from suite.settings import Settings, default_data_dir
from suite.testing import running_stack, stack_env, stack_settings

GROWTH_MAX, DRIFT_MAX = 0.05, 0.10
COLLECTION = "soak"


def process_figures(settings: Settings) -> dict[str, dict[str, float]]:
    """RSS (MiB), fds and threads of the process serving each service's port."""
    out = {}
    for spec in services.SERVICES:
        pid = port_pid(settings.port(spec.name))
        if pid is None:
            continue
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                out[spec.name] = {"pid": pid, "rss_mib": p.memory_info().rss / 2**20, "fds": p.num_fds(),
                                  "threads": p.num_threads()}
        except psutil.Error:
            continue
    return out


def gateway_p95(load_dir: Path, since: float, until: float) -> tuple[float | None, int, int]:
    """(p95 ms, requests, failed) of requests through the gateway that ended in [since, until)."""
    window = [s for f in load_dir.rglob("samples-*.jsonl") for s in samples_mod.read_samples(f)
              if since <= s.end < until]
    through_gateway = [s.ms for s in window if s.ok and s.name in ("code completion", "chat stream")]
    return (percentile(through_gateway, 95) if through_gateway else None), len(window), sum(not s.ok for s in window)


def prepare(settings: Settings) -> dict[str, str]:
    """Documents for the RAG queries, and the environment every scenario shares."""
    docs = [{"id": f"soak-{i}", "text": text} for i, text in enumerate((
        "Backups are kept for seven days and verified before every restore.",
        "The gateway routes each request to the chat or the code model and fails over between them."))]
    httpx.post(settings.url("rag") + "/index", json={"collection": COLLECTION, "documents": docs},
               headers=headers_for(settings, "developer"), timeout=300).raise_for_status()
    return {"LOAD_RAG_COLLECTION": COLLECTION}


def run_load(settings: Settings, load_dir: Path, seconds: float, users: int, failures: list[str]) -> list[threading.Thread]:
    """The steady mix in Locust subprocesses (``harness.load.runner``), one thread per scenario."""
    base = {**stack_env(settings), **prepare(settings)}  # Locust's users find the other services by these
    mixed = replace(SCENARIOS["mixed"], users=users, spawn_rate=users, duration_s=seconds, requests=0, max_tokens=32)
    tools = replace(SCENARIOS["tools"], duration_s=seconds, requests=0)
    threads = []
    for sc in (mixed, tools):
        env = {**base, **load_env(settings, sc)}

        def go(sc=sc, env=env) -> None:
            try:
                runner.run_scenario(sc, settings.url(sc.service), load_dir / sc.name, phase=3,
                                    max_run_s=seconds + 60, extra_env=env)
            except Exception as exc:  # shown in the verdict
                failures.append(f"{sc.name}: {type(exc).__name__}: {exc}")

        threads.append(threading.Thread(target=go, name=f"soak-{sc.name}", daemon=True))
        threads[-1].start()
    return threads


def _thirds(values: list[float]) -> tuple[list[float], list[float]]:
    """The first and the last third of a series (at least one value each)."""
    k = max(1, len(values) // 3)
    return values[:k], values[-k:]


def judge(samples: list[dict], warmup_s: float) -> tuple[list[str], list[str]]:
    """(table lines, problems) from the samples after the warm-up.

    Growth is judged on the *floor*: the lowest RSS or fd count of the first third of the samples
    against the lowest of the last third. A leak raises the floor; a burst of requests (a connection
    pool's sockets, a large answer's buffers) raises single samples and falls back, and with a dozen
    fds one keep-alive connection alone is +8 %. The p95 drift compares the medians of the two thirds'
    windows. With a dozen descriptors 5 % is less than one, so the fd bound is 5 % or one descriptor,
    whichever is larger (one more is a pool reaching its size: ``tests/test_leaks.py`` shows the
    services' descriptors flat across requests)."""
    after = [s for s in samples if s["t"] >= warmup_s]
    lines = ["| service | RSS floor first → last third (MiB) | growth | fds floor | growth | threads (max) |",
             "|---|---|---|---|---|---|"]
    problems = []
    if len(after) < 2:
        return lines, ["fewer than two samples after the warm-up: nothing to compare"]
    names = sorted(set(after[0]["processes"]) & set(after[-1]["processes"]))
    for name in names:
        series = {k: [s["processes"][name][k] for s in after if name in s["processes"]] for k in
                  ("rss_mib", "fds", "threads")}
        first, last, growth = {}, {}, {}
        for k in ("rss_mib", "fds"):
            a, b = _thirds(series[k])
            first[k], last[k] = min(a), min(b)
            growth[k] = (last[k] - first[k]) / first[k] if first[k] else 0.0
        lines.append(f"| {name} | {first['rss_mib']:.0f} → {last['rss_mib']:.0f} | {growth['rss_mib']:+.1%} | "
                     f"{first['fds']:.0f} → {last['fds']:.0f} | {growth['fds']:+.1%} | "
                     f"{min(series['threads']):.0f}–{max(series['threads']):.0f} |")
        if growth["rss_mib"] > GROWTH_MAX:
            problems.append(f"{name} RSS floor grew {growth['rss_mib']:.1%} (> {GROWTH_MAX:.0%})")
        if last["fds"] - first["fds"] > max(1, GROWTH_MAX * first["fds"]):
            problems.append(f"{name} fd floor grew {first['fds']:.0f} → {last['fds']:.0f} (> 5 % or one)")
    p95 = [s["gateway_p95_ms"] for s in after if s["gateway_p95_ms"] is not None]
    if len(p95) >= 2:
        a, b = _thirds(p95)
        first_p95, last_p95 = statistics.median(a), statistics.median(b)
        drift = (last_p95 - first_p95) / first_p95
        lines += ["", f"Gateway p95 (code completions and chat streams, per window; median of the first and "
                      f"the last third): {first_p95:.0f} ms → {last_p95:.0f} ms ({drift:+.1%})."]
        if abs(drift) > DRIFT_MAX:
            problems.append(f"gateway p95 drifted {drift:+.1%} (> ±{DRIFT_MAX:.0%})")
    failed = sum(s["failed"] for s in samples)
    requests = sum(s["requests"] for s in samples)
    lines.append(f"Requests: {requests}, failed: {failed}.")
    if failed:
        problems.append(f"{failed} failed requests")
    return lines, problems


def plot(samples: list[dict], warmup_s: float, target: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    names = sorted({n for s in samples for n in s["processes"]})
    for name in names:  # RSS as the change since the warm-up: 500 MiB and 50 MiB services on one scale
        pts = [(s["t"] / 60, s["processes"][name]["rss_mib"]) for s in samples if name in s["processes"]]
        base = next((v for t, v in pts if t * 60 >= warmup_s), pts[0][1] if pts else 1.0)
        axes[0].plot([p[0] for p in pts], [100 * (p[1] / base - 1) for p in pts], label=name)
    axes[0].set_ylabel("RSS change (%)")
    for ax, (key, label) in zip(axes[1:3], (("fds", "open fds"), ("threads", "threads"))):
        for name in names:
            pts = [(s["t"] / 60, s["processes"][name][key]) for s in samples if name in s["processes"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7, ncol=4)
    pts = [(s["t"] / 60, s["gateway_p95_ms"]) for s in samples if s["gateway_p95_ms"] is not None]
    axes[3].plot([p[0] for p in pts], [p[1] for p in pts], color="black")
    axes[3].set_ylabel("gateway p95 (ms)")
    axes[3].set_xlabel("minutes")
    for ax in axes:
        ax.axvline(warmup_s / 60, color="grey", linestyle="--", linewidth=0.8)
    fig.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    import io

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    return write_atomic(target, buf.getvalue())


def soak(settings: Settings, out: Path, minutes: float, warmup_min: float, sample_s: float, users: int) -> tuple[list[dict], list[str]]:
    seconds = minutes * 60
    load_dir = out / "load"
    failures: list[str] = []
    run_keys(settings)  # minted before the clock starts
    threads = run_load(settings, load_dir, seconds, users, failures)
    t0 = time.time()
    samples: list[dict] = []
    while time.time() - t0 < seconds:
        time.sleep(max(0.0, t0 + (len(samples) + 1) * sample_s - time.time()))
        now = time.time()
        p95, requests, failed = gateway_p95(load_dir, now - sample_s, now)
        samples.append({"t": round(now - t0, 1), "processes": process_figures(settings), "gateway_p95_ms": p95,
                        "requests": requests, "failed": failed, "load_avg": os.getloadavg()[0]})
        write_json(out / "soak.json", {"minutes": minutes, "warmup_min": warmup_min, "samples": samples})
        shown = f"{p95:.0f} ms" if p95 is not None else "-"
        print(f"{samples[-1]['t'] / 60:5.1f} min: {requests} requests ({failed} failed), gateway p95 {shown}, "
              f"load {samples[-1]['load_avg']:.1f}", flush=True)
    for t in threads:
        t.join(timeout=180)
    return samples, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--warmup-min", type=float, default=5.0)
    parser.add_argument("--sample-s", type=float, default=30.0)
    parser.add_argument("--users", type=int, default=3, help="users of the mixed scenario")
    parser.add_argument("--use-running", action="store_true", help="soak the stack Settings() describes")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    out = args.out or default_data_dir() / "soak" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    if args.use_running:
        samples, failures = soak(Settings(), out, args.minutes, args.warmup_min, args.sample_s, args.users)
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp, \
                running_stack(stack_settings(Path(tmp), install_gemma(default_data_dir() / "models")), 3) as s:
            samples, failures = soak(s, out, args.minutes, args.warmup_min, args.sample_s, args.users)
    lines, problems = judge(samples, args.warmup_min * 60)
    problems += failures
    figure = plot(samples, args.warmup_min * 60, out / "soak.svg")
    head = (f"{args.minutes:g} min of `load/mixed.py` at {args.users} users + the tools scenario, phase 3, CPU "
            f"default; sampled every {args.sample_s:g} s; judged after a {args.warmup_min:g}-min warm-up; "
            f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median load average "
            f"{statistics.median(s['load_avg'] for s in samples):.1f}.")
    verdict = "**all goals met**" if not problems else "**missed**: " + "; ".join(problems)
    text = "\n".join([head, "", *lines, "",
                      f"Goals (RSS and fd floors ≤ +5 %, p95 drift ≤ ±10 %, 0 failed): {verdict}."])
    print(text)
    if args.write_docs:
        doc_figure = DOC.parent / "figures" / "soak.svg"
        doc_figure.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(doc_figure, figure.read_text())
        write_section("Soak", text + "\n\n![soak](figures/soak.svg)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency over time (one panel per scenario) and the percentile table, for the load runbook."""

from __future__ import annotations

import html
from pathlib import Path

from harness.load.runner import LoadRun
from harness.load.stats import TABLE_PERCENTILES
from harness.palette import MUTED, status_color
from harness.result import Status


def latency_over_time(runs: list[LoadRun], path: Path):
    """Each request as a point (x: start since the run began, y: full duration); failures in red,
    warm-up in grey, the scenario's percentile targets as dashed lines. Saved as SVG at ``path``."""
    import matplotlib

    if "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r.samples or r.warmup_samples]
    fig, axes = plt.subplots(max(1, len(runs)), 1, figsize=(8, 2.6 * max(1, len(runs))), squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        everything = run.samples + run.warmup_samples
        t0 = min(s.start for s in everything)
        names = list(dict.fromkeys(s.name for s in run.samples))
        for name in names:
            ok = [s for s in run.samples if s.name == name and s.ok]
            ax.scatter([s.start - t0 for s in ok], [s.ms for s in ok], s=14, label=name)
        bad = [s for s in run.samples if not s.ok]
        if bad:
            ax.scatter([s.start - t0 for s in bad], [s.ms for s in bad], s=18, c=status_color(Status.FAIL), marker="x", label="failed")
        if run.warmup_samples:
            ax.scatter([s.start - t0 for s in run.warmup_samples], [s.ms for s in run.warmup_samples],
                       s=12, c=MUTED, label="warm-up (excluded)")
        for th in run.scenario.targets():
            if th.is_time and th.is_percentile and not th.metric.startswith(("ttft_", "itl_")):
                ax.axhline(th.value, ls="--", lw=1, c=status_color(Status.WARN))
                ax.text(0, th.value, f" {th}", va="bottom", fontsize=7, color=status_color(Status.WARN))
        ax.set_title(f"{run.scenario.name}: {run.scenario.users} users", fontsize=9)
        ax.set_xlabel("seconds since start", fontsize=8)
        ax.set_ylabel("ms", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg")
    return fig


def percentile_table(runs: list[LoadRun]):
    """An HTML table: per scenario and row, count, failures, min/avg/p50/p90/p95/p99/max."""
    from IPython.display import HTML

    cols = ["min", "avg", *(f"p{p}" for p in TABLE_PERCENTILES), "max"]
    head = "".join(f"<th>{h}</th>" for h in ("scenario", "row", "unit", "count", "failures", *cols))
    body = []
    for run in runs:
        for row in run.rows():
            cells = "".join(f"<td>{'' if row.values[c] is None else f'{row.values[c]:.1f}'}</td>" for c in cols)
            body.append(f"<tr><td>{html.escape(run.scenario.name)}</td><td>{html.escape(row.name)}</td>"
                        f"<td>{row.unit}</td><td>{row.count}</td><td>{row.failures}</td>{cells}</tr>")
    note = ("<p><small>Exact nearest-rank percentiles over raw samples (warm-up excluded); "
            "ttft/itl in ms, tps in output tokens per second.</small></p>")
    return HTML(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{note}")


def capacity_curve(capacity, path: Path):
    """The capacity search as curves (``harness.load.capacity``): left, throughput against p95 latency
    (and TTFT p95) for each concurrency probed, labelled with its users, the knee ringed and the SLO's
    end-to-end bound dashed; right, the offered arrival rate against the throughput and p95 latency it
    got. Passing probes in the PASS colour, the others in FAIL's (undecided in INDETERMINATE's). SVG."""
    import matplotlib

    if "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [s for s in (capacity.users, capacity.rate) if s is not None and s.probes]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 3.6), squeeze=False)

    def colour(p) -> str:
        if p.passed:
            return status_color(Status.PASS)
        return status_color(Status.INDETERMINATE if p.status is Status.INDETERMINATE and not p.saturated else Status.FAIL)

    e2e = [o for o in capacity.slo.objectives if not o.metric.startswith(("ttft_", "itl_"))]
    for ax, found in zip(axes[0], panels):
        probes = sorted((p for p in found.probes if p.p95_ms is not None), key=lambda p: p.level)
        if found.kind == "users":
            xs = [p.throughput or 0 for p in probes]
            ax.plot(xs, [p.p95_ms for p in probes], c=MUTED, lw=1, zorder=1)
            ax.scatter(xs, [p.p95_ms for p in probes], c=[colour(p) for p in probes], zorder=2, label="p95 latency")
            ttft = [(x, p.ttft_p95_ms) for x, p in zip(xs, probes) if p.ttft_p95_ms is not None]
            if ttft:
                ax.plot(*zip(*ttft), ls=":", c=MUTED, marker=".", label="TTFT p95")
            for x, p in zip(xs, probes):
                ax.annotate(f"{p.level:g}", (x, p.p95_ms), textcoords="offset points", xytext=(4, 4), fontsize=7)
            knee = capacity.knee
            if knee is not None:
                ax.scatter([knee.throughput], [knee.p95_ms], s=220, facecolors="none", edgecolors=status_color(Status.WARN),
                           lw=1.5, zorder=3, label=f"knee: {knee.level:g} users")
            ax.set_xlabel("throughput (successful req/s)", fontsize=8)
            ax.set_title(f"{capacity.scenario}: concurrency probes (users)", fontsize=9)
        else:
            xs = [p.level for p in probes]
            ax.plot(xs, [p.throughput or 0 for p in probes], c=MUTED, ls="--", lw=1, label="throughput (req/s)")
            ax2 = ax.twinx()
            ax2.scatter(xs, [p.p95_ms for p in probes], c=[colour(p) for p in probes], label="p95 latency")
            ax2.set_ylabel("p95 ms", fontsize=8)
            ax2.set_ylim(bottom=0)
            ax.set_xlabel("offered rate (req/s, Poisson)", fontsize=8)
            ax.set_ylabel("req/s", fontsize=8)
            ax.set_title(f"{capacity.scenario}: arrival-rate probes (≤ {capacity.cap} in flight)", fontsize=9)
            ax = ax2
        for o in e2e:
            ax.axhline(o.value, ls="--", lw=1, c=status_color(Status.WARN))
            ax.text(ax.get_xlim()[0], o.value, f" SLO {o.text}", va="bottom", fontsize=7, color=status_color(Status.WARN))
        if found.kind == "users":
            ax.set_ylabel("ms", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg")
    return fig

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

"""The load runbook's and the latency explorer's charts and percentile table, drawn by the rules of
``harness.charts`` (seconds past 10 s, axes scaled to the data with targets marked, log axes where
values differ, legends outside the data)."""

from __future__ import annotations

from pathlib import Path

from harness.charts import legend_outside, mark_target, pyplot, save, scale_to_data, time_unit
from harness.load import stats
from harness.load.runner import LoadRun
from harness.load.stats import TABLE_PERCENTILES
from harness.palette import ACCENT, MUTED, status_color
from harness.result import Status


def latency_over_time(runs: list[LoadRun], path: Path | None = None):
    """One panel per scenario: each request as a point (x: start since the run began, y: full
    duration); failures as red crosses, warm-up in grey, the scenario's percentile targets marked.
    Saved as SVG at ``path`` when given."""
    plt = pyplot()
    runs = [r for r in runs if r.samples or r.warmup_samples]
    fig, axes = plt.subplots(max(1, len(runs)), 1, figsize=(8, 2.6 * max(1, len(runs))), squeeze=False)
    for ax, run in zip(axes[:, 0], runs):
        everything = run.samples + run.warmup_samples
        t0 = min(s.start for s in everything)
        divisor, unit = time_unit(max(s.ms for s in everything))
        for name in dict.fromkeys(s.name for s in run.samples):
            ok = [s for s in run.samples if s.name == name and s.ok]
            ax.scatter([s.start - t0 for s in ok], [s.ms / divisor for s in ok], s=14, label=name)
        bad = [s for s in run.samples if not s.ok]
        if bad:
            ax.scatter([s.start - t0 for s in bad], [s.ms / divisor for s in bad], s=18,
                       c=status_color(Status.FAIL), marker="x", label="failed")
        if run.warmup_samples:
            ax.scatter([s.start - t0 for s in run.warmup_samples], [s.ms / divisor for s in run.warmup_samples],
                       s=12, c=MUTED, label="warm-up (excluded)")
        log = scale_to_data(ax, [s.ms / divisor for s in everything])
        for th in run.scenario.targets():
            if th.is_time and th.is_percentile and not th.metric.startswith(("ttft_", "itl_")):
                mark_target(ax, th.value / divisor, str(th))
        ax.set_title(f"{run.scenario.name}: {run.scenario.users} users", fontsize=9)
        ax.set_xlabel("seconds since start", fontsize=8)
        ax.set_ylabel(f"{unit}{' (log)' if log else ''}", fontsize=8)
        legend_outside(ax)
    fig.tight_layout()
    if path is not None:
        save(fig, path)
    return fig


def latency_histograms(runs: list[LoadRun]):
    """Per scenario, the distribution of full request durations (stacked by row), with its p50, p95
    and p99; None when no run has measured samples."""
    plt = pyplot()
    runs = [r for r in runs if r.samples]
    if not runs:
        return None
    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 2.6 * len(runs)), squeeze=False)
    for ax, r in zip(axes[:, 0], runs):
        values = [s.ms for s in r.samples]
        divisor, unit = time_unit(max(values))
        names = list(dict.fromkeys(s.name for s in r.samples))
        ax.hist([[s.ms / divisor for s in r.samples if s.name == n] for n in names], bins=30, stacked=True,
                label=names)
        for p, style in ((50, ":"), (95, "--"), (99, "-.")):
            v = stats.percentile(values, p) / divisor
            ax.axvline(v, ls=style, lw=1, c=MUTED, label=f"p{p} {v:,.1f} {unit}")
        ax.set_title(f"{r.scenario.name}: {len(values)} requests", fontsize=9)
        ax.set_xlabel(unit, fontsize=8)
        ax.set_ylabel("requests", fontsize=8)
        legend_outside(ax)
    fig.tight_layout()
    return fig


STREAM_METRICS = (("ttft_ms", "time to first token", "ms"), ("itl_ms", "inter-token latency", "ms"),
                  ("tps", "output tokens per second", "tok/s"))


def streamed_histograms(run: LoadRun):
    """Time to first token, inter-token latency and tokens per second of a streamed-chat scenario:
    ``(figure, summary line)``, or ``(None, "")`` when its samples carry none of them."""
    plt = pyplot()
    present = [(attr, title, unit) for attr, title, unit in STREAM_METRICS
               if any(getattr(s, attr) is not None for s in run.samples)]
    if not present:
        return None, ""
    fig, axes = plt.subplots(1, len(present), figsize=(3.6 * len(present), 2.6), squeeze=False)
    summary = []
    for ax, (attr, title, unit) in zip(axes[0], present):
        values = [getattr(s, attr) for s in run.samples if getattr(s, attr) is not None]
        divisor, shown_unit = time_unit(max(values)) if unit == "ms" else (1.0, unit)
        ax.hist([v / divisor for v in values], bins=20, color=ACCENT)
        p50, p95 = stats.percentile(values, 50), stats.percentile(values, 95)
        ax.axvline(p50 / divisor, ls=":", lw=1, c=MUTED)
        ax.axvline(p95 / divisor, ls="--", lw=1, c=MUTED)
        ax.set_title(f"{title} ({len(values)})\n{shown_unit}: p50 {p50 / divisor:,.1f} (dotted), "
                     f"p95 {p95 / divisor:,.1f} (dashed)", fontsize=8)
        ax.set_xlabel(shown_unit, fontsize=8)
        summary.append(f"{attr} p50 {p50:.1f} p95 {p95:.1f} {unit}")
    fig.suptitle(run.scenario.name, fontsize=10)
    fig.tight_layout()
    tokens = [s.tokens for s in run.samples if s.tokens is not None]
    line = f"{run.scenario.name}: " + "; ".join(summary) + (
        f"; tokens per request {min(tokens)}-{max(tokens)}" if tokens else "")
    return fig, line


def percentile_table(runs: list[LoadRun]):
    """An HTML table: per scenario and row, count, failures, min/avg/p50/p90/p95/p99/max."""
    from IPython.display import HTML

    from harness.tables import html_table

    cols = ["min", "avg", *(f"p{p}" for p in TABLE_PERCENTILES), "max"]
    rows = [[run.scenario.name, row.name, row.unit, row.count, row.failures,
             *("" if row.values[c] is None else f"{row.values[c]:.1f}" for c in cols)]
            for run in runs for row in run.rows()]
    note = ("<p><small>Exact nearest-rank percentiles over raw samples (warm-up excluded); "
            "ttft/itl in ms, tps in output tokens per second.</small></p>")
    return HTML(html_table(["scenario", "row", "unit", "count", "failures", *cols], rows, css="percentiles") + note)

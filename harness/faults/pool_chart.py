"""The pool drill's traffic split over time: requests started each second, stacked by the replica that
served them, failures on top, with the kill, the ejection, the replica's own readiness and its
readmission marked."""

from __future__ import annotations

import math
from pathlib import Path

from harness.faults.pool import PoolKill
from harness.palette import ACCENT, MUTED, status_color

SERIES = (ACCENT, "#8250df", "#bf8700", "#1b7c83", "#953800")  # one per replica, in pool order


def split_by_second(rec: PoolKill) -> tuple[list[float], dict[str, list[int]], list[int]]:
    """(bin starts in seconds from the kill, successful requests per replica per bin, failures per bin)."""
    if not rec.samples:
        return [], {name: [] for name in rec.pool}, []
    second = [math.floor(s.start - rec.killed_at) for s in rec.samples]
    first = min(second)
    bins = list(range(first, max(second) + 1))
    served = {name: [0] * len(bins) for name in rec.pool}
    failed = [0] * len(bins)
    for s, at in zip(rec.samples, second):
        name = rec.served_by(s)
        if name in served:
            served[name][at - first] += 1
        elif not s.ok:
            failed[at - first] += 1
    return [float(b) for b in bins], served, failed


def traffic_chart(rec: PoolKill, path: Path):
    import matplotlib

    if "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins, served, failed = split_by_second(rec)
    fig, ax = plt.subplots(figsize=(8, 2.8))
    bottom = [0] * len(bins)
    for color, (name, counts) in zip(SERIES * 4, served.items()):
        ax.bar(bins, counts, width=0.9, bottom=bottom, align="edge", color=color, label=f"served by {name}")
        bottom = [b + c for b, c in zip(bottom, counts)]
    if any(failed):
        ax.bar(bins, failed, width=0.9, bottom=bottom, align="edge", color=status_color("fail"), label="failed")
    marks = [(0.0, "kill -9", status_color("fail"), "-"),
             (rec.eject_s, "ejected", status_color("warn"), "-"),
             (rec.restart_s, "its /ready passes", MUTED, "--"),
             (None if rec.readmitted_at is None else rec.readmitted_at - rec.killed_at, "readmitted",
              status_color("pass"), "-")]
    for i, (x, label, color, style) in enumerate(marks):
        if x is None:
            continue
        ax.axvline(x, color=color, lw=1, ls=style)
        ax.text(x, 0.98 - 0.1 * i, f" {label} {x:.1f} s", transform=ax.get_xaxis_transform(), va="top",
                fontsize=7, color=color)
    ax.set_title(f"{rec.alias} pool: requests per second by replica ({rec.replica} killed)", fontsize=9)
    ax.set_xlabel("seconds from the kill", fontsize=8)
    ax.set_ylabel("requests started", fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg")
    return fig

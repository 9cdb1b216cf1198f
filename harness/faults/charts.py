"""The drill's timeline: one panel per killed service, every request of its window as a point."""

from __future__ import annotations

from pathlib import Path

from harness.charts import legend_outside, pyplot, save, scale_to_data
from harness.faults.records import FALLBACK, Drill
from harness.load.samples import Sample
from harness.palette import ACCENT, MUTED, status_color


def timeline_chart(drills: list[Drill], path: Path):
    """One panel per killed service: each request of the window as a point (x: seconds from the
    kill, y: its duration), the outage shaded up to the moment the service was ready again."""
    plt = pyplot()
    fig, axes = plt.subplots(max(1, len(drills)), 1, figsize=(8, 1.9 * max(1, len(drills)) + 0.4), squeeze=False)
    bad, good = status_color("fail"), status_color("pass")
    styles = {"other requests": (MUTED, "."), "needed it, ok": (ACCENT, "o"),
              "served by the other model": (good, "^"), "failed": (bad, "x")}
    for ax, d in zip(axes[:, 0], drills):
        needed = {id(s) for s in d.samples}
        kinds = [_kind(s, id(s) in needed) for s in d.around]
        for label, (color, marker) in styles.items():
            pts = [s for s, k in zip(d.around, kinds) if k == label]
            if pts:
                ax.scatter([s.start - d.killed_at for s in pts], [s.ms / 1000 for s in pts], s=16, c=color,
                           marker=marker, label=label)
        ax.axvspan(0, d.outage_end - d.killed_at, color=bad, alpha=0.08)
        ax.axvline(0, color=bad, lw=1)
        ax.text(0, 1.0, " kill -9", transform=ax.get_xaxis_transform(), va="top", fontsize=7, color=bad)
        if d.recovery_s is not None:
            ax.axvline(d.recovery_s, color=good, lw=1, ls="--")
            ax.text(d.recovery_s, 0.8, f" ready {d.recovery_s:.1f} s", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=7, color=good)
        ax.set_title(d.summary(), fontsize=9)
        ax.set_ylabel("request duration, s", fontsize=8)
        scale_to_data(ax, [s.ms / 1000 for s in d.around], log=False)
        legend_outside(ax, fontsize=6)
    axes[-1, 0].set_xlabel("seconds from the kill", fontsize=8)
    fig.tight_layout()
    save(fig, path)
    return fig


def _kind(sample: Sample, needed: bool) -> str:
    if not sample.ok:
        return "failed"
    if not needed:
        return "other requests"
    return "served by the other model" if sample.name.endswith(FALLBACK) else "needed it, ok"

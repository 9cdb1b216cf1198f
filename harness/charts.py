"""Small matplotlib charts saved as SVG into a run's ``figures/`` (the report inlines them)."""

from __future__ import annotations

from pathlib import Path

from harness.palette import ACCENT, status_color
from harness.result import Status


def bar_chart(labels: list[str], values: list[float], title: str, xlabel: str, path: Path,
              statuses: list[Status] | None = None):
    """A horizontal bar chart, bars coloured by ``statuses`` (the palette's) when given; returns the
    figure so a notebook can show it too."""
    import matplotlib

    if "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = [status_color(s) for s in statuses] if statuses else [ACCENT] * len(labels)
    fig, ax = plt.subplots(figsize=(7, max(1.8, 0.35 * len(labels) + 0.8)))
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    for y, v in enumerate(values[::-1]):
        ax.text(v, y, f" {v:.1f}", va="center", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lstrip(".") or "svg")
    return fig

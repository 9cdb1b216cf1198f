"""Small matplotlib charts saved as SVG into a run's ``figures/`` (the report inlines them), and the
rules every chart of the harness follows so that it reads the same in JupyterLab and in the report:

- durations in ms up to 10 s, in seconds past that (``time_unit``): never "30,000 ms";
- axes scaled to the data, not to a target far above it: an 8 ms scenario is not a flat line under a
  3,000 ms target; a target outside the data range is named at the edge instead (``mark_target``);
- a log scale where values differ by more than ``LOG_RATIO`` (a 2 ms probe beside a 900 ms one);
- legends outside the plotted area (``legend_outside``), so they never cover bars or points.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.palette import ACCENT, status_color
from harness.result import Status

SECONDS_PAST_MS = 10_000.0  # durations above 10 s are shown in seconds
LOG_RATIO = 100.0  # positive values spanning more than this factor get a log axis
TARGET_COLOR = status_color(Status.WARN)


def pyplot():
    """matplotlib's pyplot, on the Agg backend unless a notebook's inline backend is active."""
    import matplotlib

    if "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def time_unit(max_ms: float) -> tuple[float, str]:
    """``(divisor, unit)`` for durations whose largest is ``max_ms``: ms up to 10 s, else s."""
    return (1000.0, "s") if max_ms > SECONDS_PAST_MS else (1.0, "ms")


def wants_log(values: Iterable[float]) -> bool:
    """True when the positive values span more than ``LOG_RATIO`` (one linear axis would flatten
    the small ones)."""
    positive = [v for v in values if v is not None and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) > LOG_RATIO


def scale_to_data(ax, values: Sequence[float], axis: str = "y", log: bool | None = None) -> bool:
    """Limit ``axis`` to the data (from 0, or a log axis when ``log`` or the values call for one);
    returns whether the axis is logarithmic."""
    positive = [v for v in values if v is not None and v > 0]
    if not positive:
        return False
    log = wants_log(positive) if log is None else log
    top = max(positive)
    if log:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        lo, hi = min(positive) / 1.5, top * 1.5
    else:
        lo, hi = 0.0, top * 1.12
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo, hi)
    return log


def mark_target(ax, value: float, label: str, axis: str = "y") -> None:
    """A target line where the data range reaches it; beyond it, the target named at the axis's edge
    with an arrow pointing where it lies."""
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    style = {"color": TARGET_COLOR, "fontsize": 7}
    if lo <= value <= hi:
        (ax.axhline if axis == "y" else ax.axvline)(value, ls="--", lw=1, c=TARGET_COLOR)
        if axis == "y":
            ax.text(0.0, value, f" {label}", va="bottom", transform=ax.get_yaxis_transform(), **style)
        else:
            ax.text(value, 1.0, f" {label}", va="top", transform=ax.get_xaxis_transform(), **style)
        return
    # outside the plotted area, above its right corner: it never covers a point
    if axis == "y":
        arrow, where = ("↑", "above") if value > hi else ("↓", "below")
    else:
        arrow, where = ("→", "right of") if value > hi else ("←", "left of")
    ax.text(1.0, 1.01, f"{arrow} {label}: {where} the data", ha="right", va="bottom", transform=ax.transAxes,
            **style)


def legend_outside(ax, **kwargs) -> None:
    """The legend to the right of the plotted area (saved with ``bbox_inches="tight"``)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False,
                  fontsize=kwargs.pop("fontsize", 7), **kwargs)


def save(fig, path: Path) -> Path:
    """Save ``fig`` (SVG unless the suffix says otherwise), legends outside included."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format=path.suffix.lstrip(".") or "svg", bbox_inches="tight")
    return path


def bar_chart(labels: list[str], values: list[float], title: str, xlabel: str, path: Path,
              statuses: list[Status] | None = None, target: float | None = None, target_label: str = ""):
    """A horizontal bar chart, bars coloured by ``statuses`` (the palette's) when given, values in
    ``xlabel``'s unit (``ms`` turns into s past 10 s), a log axis where they differ by more than 100×,
    ``target`` marked; returns the figure so a notebook can show it too."""
    plt = pyplot()
    colors = [status_color(s) for s in statuses] if statuses else [ACCENT] * len(labels)
    divisor, unit = time_unit(max(values, default=0.0)) if xlabel == "ms" else (1.0, xlabel)
    shown = [v / divisor for v in values]
    fig, ax = plt.subplots(figsize=(7, max(1.8, 0.35 * len(labels) + 0.8)))
    ax.barh(labels[::-1], shown[::-1], color=colors[::-1])
    ax.set_xlabel(unit)
    ax.set_title(title)
    log = scale_to_data(ax, shown, axis="x")
    if log:
        ax.set_xlabel(f"{unit} (log scale)")
    for y, v in enumerate(shown[::-1]):
        ax.text(v, y, f" {v:,.1f}" if v < 1000 else f" {v:,.0f}", va="center", fontsize=8)
    if target is not None:
        mark_target(ax, target / divisor, target_label or f"target {target / divisor:g} {unit}", axis="x")
    fig.tight_layout()
    save(fig, path)
    return fig

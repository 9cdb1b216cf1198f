"""The report's first screen: key figures with their headroom, and the changes since the last run, in
the few lines a reviewer reads before deciding to scroll.

Headroom is measured ÷ target where the target has one numeric bound (``CheckResult.bound``, the
one parser: ``p95<3000ms``, ``rps>1``, ``fail_ratio<0.03``, ``>= 5 GB`` in the result's own unit).
Under an upper bound the ratio is the share of the budget used (0.41: 41 % used); over a lower bound,
how many times the floor was reached (2.5×).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.result import CheckResult, Status, format_measure


@dataclass(frozen=True)
class Headroom:
    ratio: float  # measured ÷ target
    upper: bool  # the target is an upper bound (lower is better)

    @property
    def text(self) -> str:
        return f"{self.ratio:.0%} of limit" if self.upper else f"{self.ratio:.2f}× floor"

    @property
    def tight(self) -> bool:
        """Within 20 % of the bound, or past it."""
        return self.ratio > 0.8 if self.upper else self.ratio < 1.2

    @property
    def bar_pct(self) -> int:
        """Width of the budget bar (upper bounds only)."""
        return max(0, min(100, round(self.ratio * 100)))


def headroom(r: CheckResult) -> Headroom | None:
    if r.value is None or not r.is_gate or r.ratio is None:
        return None
    return Headroom(r.ratio, r.bound.upper)


@dataclass
class FigureRow:
    """One load scenario's key figures."""

    scenario: str
    figures: dict[str, CheckResult] = field(default_factory=dict)  # p95 | rps | ttft_p95

    @property
    def worst(self) -> Status:
        statuses = [r.status for r in self.figures.values()]
        for s in (Status.FAIL, Status.INDETERMINATE, Status.WARN, Status.PASS):
            if s in statuses:
                return s
        return Status.INFO


def figure_rows(key_figures: list[CheckResult]) -> list[FigureRow]:
    """``history.key_figures`` regrouped one row per scenario (in first-seen order)."""
    rows: dict[str, FigureRow] = {}
    for r in key_figures:
        parts = r.id.split(".")
        if len(parts) < 3:
            continue
        kind = "rps" if parts[-1] == "run" else parts[-1]
        rows.setdefault(parts[1], FigureRow(parts[1])).figures.setdefault(kind, r)
    return list(rows.values())


def changes(since: dict[str, Any] | None, limit: int = 5) -> dict[str, Any] | None:
    """The "since last run" section boiled down: counts and the few changes that matter most (status
    changes, then regressions, then improvements), each as (short text, better|worse, full text)."""
    if not since:
        return None
    diff = since["diff"]
    worse = [d for d in since["deltas"] if d.better is False]
    better = [d for d in since["deltas"] if d.better]
    lines = [(f"{cid}: {a.label} → {b.label}", "worse" if b in (Status.FAIL, Status.INDETERMINATE) else "better" if b is Status.PASS else "",
              f"{cid}: {a.label} → {b.label}") for cid, a, b in diff.status_changes]
    lines += [(f"{d.id} {d.percent:+.0f} %" if d.percent is not None else d.id, "worse" if d.better is False else "better",
               f"{d.id}: {format_measure(d.before, d.unit)} → {format_measure(d.after, d.unit)}")
              for d in [*worse, *better]]
    lines += [(f"new warning {r.id}", "worse", f"{r.id}: {r.measured}") for r in diff.new_warnings]
    return {"previous": since["previous"], "href": since["href"], "status_changes": len(diff.status_changes),
            "worse": len(worse), "better": len(better), "new_warnings": len(diff.new_warnings),
            "lines": lines[:limit], "more": max(0, len(lines) - limit)}

"""Exact statistics over raw samples, and how far a threshold is from being lost.

Percentile definition (the same everywhere in the suite): **nearest rank** over every measured
(non warm-up) sample, failures included — sort the values ascending and take the
``ceil(p/100 * n)``-th one (1-based). The result is always a value that was actually measured, so a
p95 can be recomputed from ``samples.jsonl`` to the millisecond. Locust's own percentiles are rounded
to two significant digits and are shown for comparison only.

Rates: ``rps`` is measured requests divided by the window from the first measured request's start
to the last one's end. ``fail_ratio`` is failed / measured requests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from harness.load.samples import Sample
from harness.load.thresholds import Threshold

LLM_FIELDS = {"ttft": "ttft_ms", "itl": "itl_ms", "tps": "tps"}
TABLE_PERCENTILES = (50, 90, 95, 99)


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the ``ceil(p/100*n)``-th smallest value; None for no values."""
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _stat(values: list[float], stat: str) -> float | None:
    if not values:
        return None
    if stat == "min":
        return min(values)
    if stat == "max":
        return max(values)
    if stat == "avg":
        return sum(values) / len(values)
    if stat == "med":
        return percentile(values, 50)
    return percentile(values, float(stat[1:]))


def window_s(samples: Sequence[Sample]) -> float:
    """Seconds from the first start to the last end."""
    if not samples:
        return 0.0
    return max(s.end for s in samples) - min(s.start for s in samples)


def select(samples: Sequence[Sample], row: str | None) -> list[Sample]:
    return [s for s in samples if row is None or s.name == row]


def measure(samples: Sequence[Sample], threshold: Threshold) -> float | None:
    """The value a threshold is judged on, from measured samples; None when nothing was measured."""
    chosen = select(samples, threshold.row)
    if not chosen:
        return None
    metric = threshold.metric
    if metric == "count":
        return float(len(chosen))
    if metric == "fail_ratio":
        return sum(not s.ok for s in chosen) / len(chosen)
    if metric == "rps":
        span = window_s(chosen)
        return len(chosen) / span if span > 0 else None
    prefix = metric.split("_", 1)[0]
    if prefix in LLM_FIELDS:
        attr = LLM_FIELDS[prefix]
        values = [getattr(s, attr) for s in chosen if getattr(s, attr) is not None]
    else:
        values = [s.ms for s in chosen]
    return _stat(values, threshold.stat)


def already_lost(samples: Sequence[Sample], threshold: Threshold, planned: int) -> bool:
    """True when no outcome of the remaining requests can pass the threshold (count-bounded runs).

    Decided only where it is certain: ``fail_ratio`` upper bounds (failures so far already exceed
    the allowance of the planned total) and percentile upper bounds (more slow samples so far than
    the percentile lets through). ``planned`` is the number of measured requests the run will make.
    """
    if planned <= 0 or threshold.row is not None or threshold.op not in ("<", "<="):
        return False
    if threshold.metric == "fail_ratio":
        failures = sum(not s.ok for s in samples)
        return not threshold.passes(failures / planned)
    if threshold.is_percentile and threshold.is_time and not threshold.metric.startswith(("ttft_", "itl_")):
        # nearest rank: p >= T as soon as (n - rank + 1) samples are >= T
        rank = max(1, math.ceil(float(threshold.stat[1:]) / 100 * planned))
        allowed_bad = planned - rank  # samples that may sit at or above the target
        bad = sum(not threshold.passes(s.ms) for s in samples)
        return bad > allowed_bad
    return False


@dataclass
class RowStats:
    """One row of the percentile table (a request name, an LLM metric, or the scenario total)."""

    name: str
    unit: str
    count: int
    failures: int
    values: dict[str, float | None]


def _row(name: str, unit: str, values: list[float], count: int, failures: int) -> RowStats:
    stats: dict[str, float | None] = {"min": _stat(values, "min"), "avg": _stat(values, "avg")}
    stats.update({f"p{p}": percentile(values, p) for p in TABLE_PERCENTILES})
    stats["max"] = _stat(values, "max")
    return RowStats(name, unit, count, failures, stats)


def table(samples: Sequence[Sample], label: str = "all") -> list[RowStats]:
    """Per request name: duration stats; for streamed rows also TTFT, ITL and tokens/s; then the total."""
    rows = []
    names = list(dict.fromkeys(s.name for s in samples))
    for name in names:
        chosen = select(samples, name)
        failures = sum(not s.ok for s in chosen)
        rows.append(_row(name, "ms", [s.ms for s in chosen], len(chosen), failures))
        for key, attr in LLM_FIELDS.items():
            values = [getattr(s, attr) for s in chosen if getattr(s, attr) is not None]
            if values:
                rows.append(_row(f"{name} · {key}", "tok/s" if key == "tps" else "ms", values, len(values), 0))
    if len(names) > 1:
        rows.append(_row(label, "ms", [s.ms for s in samples], len(samples), sum(not s.ok for s in samples)))
    return rows

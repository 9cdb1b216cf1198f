"""Exact statistics over raw samples, and how far a threshold is from being lost.

Percentile definition (the same everywhere in the suite): **nearest rank** over every measured
(non warm-up) sample, failures included — sort the values ascending and take the
``ceil(p/100 * n)``-th one (1-based). The result is always a value that was actually measured, so a
p95 can be recomputed from ``samples.jsonl`` to the millisecond. Locust's own percentiles are rounded
to two significant digits and are shown for comparison only.

Rates: ``rps`` is measured requests divided by the window from the first measured request's start
to the last one's end. ``fail_ratio`` is failed / measured requests. (Gates judge the successful ones:
``harness.load.gates``.)

**Confidence interval of a percentile** (``rank_bounds``, ``percentile_interval``): distribution-free,
from order statistics. Of ``n`` independent samples, the number below the true p-quantile is
Binomial(n, p), so the ``l``-th and ``u``-th smallest samples bound it with probability
``P(l <= B <= u-1)``. ``l`` is the largest rank with ``P(B <= l-1) <= 2.5 %`` and ``u`` the smallest with
``P(B >= u) <= 2.5 %``: at least 95 % coverage for any continuous distribution (what
``scipy.stats.quantile_test`` gives for complete samples). For a p95 the upper end is finite only from
72 samples on (``0.95**72 < 2.5 %``); below that it is unbounded. A request whose time is only known
from below (cut off while running: ``censored``) enters the lower end at that time and the upper end
as unbounded; one never run (``unknown``) as anything from 0 to unbounded. Both ends stay valid
bounds, only wider.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.load.samples import Sample
from harness.load.thresholds import Threshold

LLM_FIELDS = {"ttft": "ttft_ms", "itl": "itl_ms", "tps": "tps"}
TABLE_PERCENTILES = (50, 90, 95, 99)
CONFIDENCE = 0.95  # of every percentile's interval


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


def rank_bounds(n: int | np.ndarray, p: float, confidence: float = CONFIDENCE) -> tuple:
    """1-based ranks ``(l, u)`` of the order statistics bounding the ``p``-quantile (``p`` in (0, 1)) of
    ``n`` samples with at least ``confidence`` coverage (module docstring); ``l == 0``: no lower
    bound, ``u == n + 1``: no upper bound. ``n`` may be an array (``requests_to_decide`` scans counts)."""
    from scipy.stats import binom

    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    a = (1 - confidence) / 2
    n_arr = np.atleast_1d(np.asarray(n, dtype=np.int64))
    # l - 1 = the largest j with P(B <= j) <= a (ppf is the smallest j with P(B <= j) >= a)
    j = binom.ppf(a, n_arr, p)
    j = np.where(binom.cdf(j, n_arr, p) <= a, j, j - 1)
    low = (j + 1).astype(np.int64)
    # u - 1 = the smallest m with P(B > m) <= a (isf); past n there is no upper bound
    high = (binom.isf(a, n_arr, p) + 1).astype(np.int64)
    low, high = np.clip(low, 0, n_arr), np.where(high > n_arr, n_arr + 1, high)
    low, high = np.where(n_arr > 0, low, 0), np.where(n_arr > 0, high, 1)
    if np.ndim(n) == 0:
        return int(low[0]), int(high[0])
    return low, high


@dataclass(frozen=True)
class Interval:
    """A percentile with its 95 % interval. ``low``/``high`` None: unbounded at that end."""

    value: float | None  # nearest rank over the values known (censored ones at their lower bound)
    low: float | None
    high: float | None
    n: int  # samples the interval counts: known + censored + unknown
    ranks: tuple[int, int]
    censored: int = 0
    unknown: int = 0


def percentile_interval(known: Sequence[float], p: float, censored: Sequence[float] = (), unknown: int = 0,
                        confidence: float = CONFIDENCE) -> Interval:
    """The ``p``-th percentile (``p`` in (0, 100)) of ``known`` values, plus ``censored`` lower bounds and
    ``unknown`` values, with its distribution-free interval (module docstring)."""
    n = len(known) + len(censored) + unknown
    value = percentile([*known, *censored], p) if (known or censored) else None
    if p >= 100:  # the maximum: bounded above only when nothing is open-ended
        return Interval(value, value, value if not (censored or unknown) else None, n, (n, n), len(censored), unknown)
    lows = sorted([*known, *censored, *[0.0] * unknown])
    highs = sorted(known)  # censored and unknown values are unbounded above: they sort last
    lo_rank, hi_rank = rank_bounds(n, p / 100, confidence)
    low = lows[lo_rank - 1] if lo_rank >= 1 else None
    high = highs[hi_rank - 1] if hi_rank <= len(highs) else None
    return Interval(value, low, high, n, (lo_rank, hi_rank), len(censored), unknown)


def requests_to_decide(known: Sequence[float], passes, p: float, upper: bool, n_from: int,
                       limit: int = 100_000, confidence: float = CONFIDENCE) -> int | None:
    """The smallest total count ``>= n_from`` at which a percentile gate would be decided if further
    samples fell on either side of the target as ``known`` did; None when none up to ``limit`` would
    (the percentile sits at the target). ``passes(value)`` says whether one value is on the target's
    good side; ``upper``: the target is an upper bound (``p95<3s``)."""
    if not known:
        return None
    good = sum(1 for v in known if passes(v)) / len(known)

    def first_decided(ns: np.ndarray) -> int | None:
        low, high = rank_bounds(ns, p / 100, confidence)
        n_good, n_bad = good * ns, (1 - good) * ns
        if upper:  # decided: the u-th smallest is good (pass) or the l-th smallest is bad (fail)
            decided = ((high <= ns) & (n_good >= high)) | ((low >= 1) & (n_good < low))
        else:  # a lower bound (tps_p50>2): the l-th smallest is good (pass) or the u-th is bad (fail)
            decided = ((low >= 1) & (n_bad < low)) | ((high <= ns) & (n_bad >= high))
        hits = np.flatnonzero(decided)
        return int(ns[hits[0]]) if hits.size else None

    start = max(1, n_from)
    dense = np.arange(start, min(limit, start + 2000) + 1)  # every count near where the run is
    if (found := first_decided(dense)) is not None or dense[-1] >= limit:
        return found
    # further out a sparse grid finds the bracket, then every count inside it (scipy's ppf is slow per value)
    grid = np.unique(np.geomspace(dense[-1], limit, 300).astype(np.int64))
    coarse = first_decided(grid)
    if coarse is None:
        return None
    before = grid[max(0, int(np.searchsorted(grid, coarse)) - 1)]
    return first_decided(np.arange(before, coarse + 1))


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

"""A progress line per scenario while Locust runs, computed from the raw samples written so far."""

from __future__ import annotations

from collections.abc import Sequence

from harness.load import stats
from harness.load.samples import Sample
from harness.load.scenarios import Scenario


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def progress_line(scenario: Scenario, measured: Sequence[Sample], elapsed_s: float, warmup_s: float,
                  cap_s: float, planned: int = 0) -> str:
    """``seed-100x5: 45/100 requests, 0 failed, p95 1.21 s, 4.3 req/s, ETA 13 s``.

    ``planned``: the requests the run is to complete now (the stated count, or more once the run was
    extended to decide a gate: ``45/72 (20 stated)``). ETA: for a request-count scenario, what is
    left at the rate so far; for a timed one, the time left; ``warming up`` before the first
    measured sample.
    """
    n = len(measured)
    failed = sum(not s.ok for s in measured)
    target = max(planned, scenario.requests)
    planned_text = f"/{target}" if target else ""
    if target > scenario.requests:
        planned_text += f" (extended from {scenario.requests})"
    if not n:
        return f"{scenario.name}: warming up ({elapsed_s:.0f} s)" if elapsed_s < warmup_s + 1 else \
            f"{scenario.name}: 0{planned_text} requests so far ({elapsed_s:.0f} s)"
    window = stats.window_s(measured)
    rate = n / window if window > 0 else 0.0
    p95 = stats.percentile([s.ms for s in measured], 95)
    if target and rate > 0:
        eta = max(0.0, (target - n) / rate)
    else:
        eta = max(0.0, (scenario.duration_s or cap_s) + warmup_s - elapsed_s)
    return (f"{scenario.name}: {n}{planned_text} requests, {failed} failed, p95 {_ms(p95)}, "
            f"{rate:.1f} req/s, ETA {eta:.0f} s")

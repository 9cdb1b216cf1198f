"""Over-saturation: the stack falls behind its arrivals, so the queue and the wait both keep growing.

In the open model (``Scenario.rate``) each raw sample carries ``in_flight`` (requests that had
arrived and not finished when it arrived: the queue as the client sees it) and its TTFT (or full
time) counted from its scheduled start. Below capacity both hover around a level; above it the
backlog grows with every second and so does every new request's wait — measurements then describe
the backlog, not the stack (GuideLLM's over-saturation detection stops a benchmark there).

The test here follows GuideLLM's: a robust slope of each signal against the scheduled start
(Theil–Sen, ``scipy.stats.theilslopes``, with its 95 % interval), and **over-saturated** when both
slopes are positive with their whole interval above zero, the queue grew by at least
``MIN_GROWTH`` requests over the window, after at least ``MIN_SECONDS`` and ``MIN_POINTS``
finished requests. A closed loop of N users cannot over-saturate (no more than N are ever in
flight, each user waits for its answer): its samples carry no ``in_flight`` and nothing is detected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from harness.load.samples import Sample

MIN_SECONDS = 10.0  # of scheduled starts before a slope is trusted (warm-up bursts settle)
MIN_POINTS = 12  # finished requests
MIN_GROWTH = 2.0  # requests the queue must have grown by over the window


@dataclass(frozen=True)
class Trend:
    slope: float  # per second of scheduled start
    low: float
    high: float

    @property
    def rising(self) -> bool:
        return self.low > 0


def trend(xs: Sequence[float], ys: Sequence[float]) -> Trend | None:
    """Theil–Sen slope of ``ys`` over ``xs`` with its 95 % interval; None when it cannot be fitted."""
    from scipy.stats import theilslopes

    if len(xs) < 3 or max(xs) - min(xs) <= 0:
        return None
    fit = theilslopes(ys, xs, alpha=0.95)
    return Trend(float(fit.slope), float(fit.low_slope), float(fit.high_slope))


@dataclass(frozen=True)
class Saturation:
    queue: Trend
    wait: Trend
    wait_metric: str  # ttft_ms or ms
    span_s: float
    points: int

    def describe(self) -> str:
        unit = "TTFT" if self.wait_metric == "ttft_ms" else "latency"
        return (f"over-saturated: the queue grew {self.queue.slope:.2f} requests/s (95 % interval "
                f"{self.queue.low:.2f}–{self.queue.high:.2f}) and {unit} {self.wait.slope:.0f} ms/s "
                f"({self.wait.low:.0f}–{self.wait.high:.0f}) over {self.span_s:.0f} s and {self.points} requests")


def detect(samples: Sequence[Sample], min_seconds: float = MIN_SECONDS, min_points: int = MIN_POINTS,
           min_growth: float = MIN_GROWTH) -> Saturation | None:
    """Over-saturation in the measured samples so far (module docstring), or None."""
    done = [s for s in samples if s.in_flight is not None and s.ok and not s.warmup]
    if len(done) < min_points:
        return None
    t0 = min(s.start for s in done)
    xs = [s.start - t0 for s in done]
    if max(xs) < min_seconds:
        return None
    metric = "ttft_ms" if all(s.ttft_ms is not None for s in done) else "ms"
    queue = trend(xs, [float(s.in_flight) for s in done])
    wait = trend(xs, [float(getattr(s, metric)) for s in done])
    if queue is None or wait is None or not (queue.rising and wait.rising):
        return None
    if queue.slope * max(xs) < min_growth:
        return None
    return Saturation(queue, wait, metric, max(xs), len(done))


def stop_when_saturated(samples: list[Sample]) -> str:
    """``run_scenario``'s ``stop_on``: the reason to stop a probe, or ""."""
    found = detect(samples)
    return found.describe() if found else ""

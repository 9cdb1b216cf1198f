"""Judge one threshold over a run's evidence: PASS, FAIL or INDETERMINATE, never PASS on evidence
the run does not have.

The evidence is the measured samples plus what is missing from a count-bounded run (``planned``
requests, fewer recorded). A request cut off while running is a failure whose time is only known
from below (``Sample.censored``); a request never run is unknown: a failure when the run hit its
time cap (``missing_failed``), or open either way when it was stopped early on purpose (the early
abort, which fires only on a gate decided against). Every gate is judged over the bounds this leaves:

- a **percentile** by its distribution-free 95 % interval (``stats.percentile_interval``): PASS when
  the whole interval is on the target's good side, FAIL when it is wholly on the other, INDETERMINATE
  when it straddles the target (then ``to_decide`` projects how many requests would decide it);
- ``min``/``max``/``avg`` and ``fail_ratio`` exactly, over the range the censored and missing
  requests leave open (a missing request may be a failure or not: INDETERMINATE until it is known);
- a **rate, latency or throughput** gate over no successful request is FAIL with the dominant error
  (``p95`` over 20 refused connections is not 0.6 ms); ``rps`` counts successful requests only.

The same function answers the runner while Locust runs (stop early only when a gate is decided
against; extend the run while one is undecided) and ``verdicts`` once it ended.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from harness.load import stats
from harness.load.samples import Sample
from harness.load.thresholds import Threshold
from harness.result import Status

INF = math.inf


@dataclass(frozen=True)
class Evidence:
    """The measured samples of a run and the requests it was to complete (0: not count-bounded)."""

    samples: Sequence[Sample]
    planned: int = 0
    missing_failed: bool = True  # never-run requests are failures (time cap) rather than unknown (abort)

    @property
    def missing(self) -> int:
        return max(0, self.planned - len(self.samples))


@dataclass
class Judgement:
    status: Status
    value: float | None
    interval: tuple[float | None, float | None] | None = None  # None ends: unbounded
    n: int = 0  # samples judged (missing ones included)
    note: str = ""  # how it was decided, for the result's detail
    at_least: bool = False  # the value is a lower bound (censored samples reach it)
    to_decide: int | None = None  # an undecided percentile: total requests that would decide it (projected)
    in_hand: int = 0  # samples with a value the judgement rests on (what to_decide counts on from)


def decide(th: Threshold, low: float | None, high: float | None) -> Status:
    """PASS when every value in ``[low, high]`` passes ``th``, FAIL when none does, else INDETERMINATE;
    INFO for a figure that is shown, not judged."""
    if not th.is_gate:
        return Status.INFO
    lo, hi = -INF if low is None else low, INF if high is None else high
    best, worst = (lo, hi) if th.op in ("<", "<=") else (hi, lo)
    if th.passes(worst):
        return Status.PASS
    if not th.passes(best):
        return Status.FAIL
    return Status.INDETERMINATE


def dominant_error(samples: Sequence[Sample]) -> str:
    """``'no answer: ConnectError: ...' (20×)``: the most frequent error of failed samples."""
    errors = Counter((s.error or "failed without a message")[:160] for s in samples if not s.ok)
    if not errors:
        return ""
    text, count = errors.most_common(1)[0]
    return f"{text!r} ({count}×)"


def _values(chosen: Sequence[Sample], th: Threshold) -> tuple[list[float], list[float], int]:
    """(known values, censored lower bounds, censored without a value) of the metric ``th`` reads."""
    prefix = th.metric.split("_", 1)[0]
    if prefix in stats.LLM_FIELDS:
        attr = stats.LLM_FIELDS[prefix]
        known = [getattr(s, attr) for s in chosen if not s.censored and getattr(s, attr) is not None]
        return known, [], sum(s.censored for s in chosen)  # a cut-off stream's TTFT / ITL / tok/s: unknown
    return [s.ms for s in chosen if not s.censored], [s.ms for s in chosen if s.censored], 0


def evaluate(evidence: Evidence, th: Threshold) -> Judgement:
    """Judge ``th`` over ``evidence`` (module docstring); a threshold that is no gate is INFO."""
    chosen = stats.select(evidence.samples, th.row)
    missing = evidence.missing
    judged = _evaluate(chosen, missing, evidence.missing_failed, th)
    if not th.is_gate:
        judged.status = Status.INFO
    return judged


def _evaluate(chosen: Sequence[Sample], missing: int, missing_failed: bool, th: Threshold) -> Judgement:
    n = len(chosen) + missing
    open_ = bool(missing) and not missing_failed  # requests still to come (or stopped early): either way
    if not chosen:
        return Judgement(Status.INDETERMINATE if open_ else Status.FAIL, None, n=n, note="no measured sample")
    failed = sum(not s.ok for s in chosen)
    if th.metric == "count":
        value = float(len(chosen))
        return Judgement(decide(th, value, value + missing if open_ else value), value, n=n)
    if th.metric == "fail_ratio":
        known_bad = failed + (missing if missing_failed else 0)
        low, high = known_bad / n, (known_bad + (missing if open_ else 0)) / n
        note = f"{failed} of {len(chosen)} failed" + (
            f", {missing} never run counted as failed" if missing and missing_failed else
            f", {missing} never run (either way)" if missing else "")
        return Judgement(decide(th, low, high), low, (low, high) if high > low else None, n, note)
    if failed == len(chosen):  # a rate, latency or throughput over no successful request
        note = f"no successful request: {failed} of {len(chosen)} failed, mostly {dominant_error(chosen)}"
        return Judgement(Status.INDETERMINATE if open_ else Status.FAIL, None, n=n, note=note)
    if th.metric == "rps":
        ok = [s for s in chosen if s.ok]
        span = stats.window_s(ok)
        value = len(ok) / span if span > 0 else None
        if value is None or open_:  # a rate is known once the run is over
            return Judgement(Status.INDETERMINATE if open_ else Status.FAIL, value, n=n,
                             note="one successful request: no window to divide by" if value is None else "")
        return Judgement(decide(th, value, value), value, n=n, note=f"{len(ok)} successful request(s) over {span:.1f} s")
    known, censored, open_ended = _values(chosen, th)
    unknown = open_ended + missing
    if not known and not censored:
        return Judgement(Status.FAIL, None, n=n, note=f"no sample carries {th.metric}")
    if th.is_percentile or th.stat == "med":
        p = 50.0 if th.stat == "med" else float(th.stat[1:])
        iv = stats.percentile_interval(known, p, censored, unknown)
        status = decide(th, iv.low, iv.high)
        judged = Judgement(status, iv.value, (iv.low, iv.high), iv.n, _interval_note(iv, p),
                           at_least=bool(censored) and iv.value is not None and iv.value >= min(censored))
        in_hand = judged.in_hand = len(known) + len(censored)
        if status is Status.INDETERMINATE and p < 100:  # from the samples in hand (more would not decide it)
            judged.to_decide = stats.requests_to_decide([*known, *censored], th.passes, p, th.op in ("<", "<="),
                                                        n_from=in_hand + (0 if unknown else 1))
        return judged
    lows = [*known, *censored, *[0.0] * unknown]
    highs = [*known, *[INF] * (len(censored) + unknown)]
    stat = {"min": min, "max": max, "avg": lambda v: sum(v) / len(v)}[th.stat]
    low, high = stat(lows), stat(highs)
    value = stat([*known, *censored])
    open_note = f"{len(censored) + unknown} sample(s) known only from below or not at all" if high > low else ""
    return Judgement(decide(th, low, None if math.isinf(high) else high), value,
                     (low, None if math.isinf(high) else high) if high > low else None, n, open_note,
                     at_least=bool(censored))


def _interval_note(iv: stats.Interval, p: float) -> str:
    lo_rank, hi_rank = iv.ranks
    ends = [f"from rank {lo_rank}" if lo_rank else "unbounded below", f"to rank {hi_rank} of {iv.n}" if hi_rank <= iv.n else
            f"unbounded above (a p{p:g} has no upper bound below {_min_samples(p)} samples)"]
    extra = [f"{iv.censored} cut off (counted from the time they ran)"] if iv.censored else []
    if iv.unknown:
        extra.append(f"{iv.unknown} without a value (never run, or cut off before the figure)")
    return f"95 % interval {' '.join(ends)} (order statistics)" + (f"; {', '.join(extra)}" if extra else "")


def _min_samples(p: float) -> int:
    """The fewest samples whose largest bounds the ``p``-th percentile from above (72 for p95)."""
    n = 1
    while stats.rank_bounds(n, p / 100)[1] > n:
        n = n * 2
    lo = n // 2
    while lo < n:  # the bound is monotone in n: bisect between the last failure and the first success
        mid = (lo + n) // 2
        if stats.rank_bounds(mid, p / 100)[1] > mid:
            lo = mid + 1
        else:
            n = mid
    return n

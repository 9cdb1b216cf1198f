"""Service level objectives per scenario: per-request bounds, attainment and goodput.

An SLO is written like thresholds (``harness.load.thresholds``)::

    ttft_p95<3s, tpot_p95<500ms, p95<15s, attainment>=95%

- each **objective** is a time percentile bound on TTFT (``ttft_``), time per output token
  (``tpot_``/``itl_``: a request's mean gap between output tokens after the first) or the full
  end-to-end duration (``e2e_`` or the bare percentile). Its bound (3 s) is what one request must
  meet; its percentile (p95) is shown beside the gates with its 95 % interval, like TTFT beside a
  latency gate.
- the **attainment** target is the share of requests that must meet *every* objective at once
  (``attainment>=95%``; 95 % when left out). A request that **failed** (an error, a broken stream,
  cut off while running) met none: it counts against attainment. A successful request without the
  figure an objective reads (TPOT of a one-token answer) is *undetermined* and left out, as
  GuideLLM does; requests never run are unknown (or failed, when the time cap ended the run).
- **goodput** is the requests per second that met every objective, over the run's window (first
  start to last end): DistServe's and vLLM's ``--goodput``, GuideLLM's request goodput.

Attainment is judged as a gate by ``harness.load.gates`` with the same distribution-free machinery
as every percentile: a request's *miss indicator* (0 met, 1 missed) has its ``target``-quantile at 0
exactly when attainment ≥ target, so the order-statistic interval of that quantile
(``stats.percentile_interval``) decides PASS / FAIL / INDETERMINATE, and ``stats.requests_to_decide``
projects how many requests would decide it (the run extends itself, as for a p95). The interval
shown on the attainment itself is the exact Clopper–Pearson interval of a binomial proportion; a
PASS is exactly "its lower end is at or above the target" (``tests/test_load_slo.py`` checks both
agree on every count up to 400). Definitions and sources: ``docs/verdicts.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from harness.load.samples import Sample
from harness.load.thresholds import Threshold, ThresholdError, parse_thresholds

DEFAULT_TARGET = 0.95
FIELDS = {"ttft": "ttft_ms", "itl": "itl_ms"}  # objective prefix -> Sample attribute; none: ``ms``


@dataclass(frozen=True)
class Slo:
    """Per-request objectives and the share of requests that must meet them all."""

    objectives: tuple[Threshold, ...]
    target: float = DEFAULT_TARGET
    text: str = ""

    def __str__(self) -> str:
        return self.text or ",".join(str(o) for o in self.objectives) + f",attainment>={self.target:.0%}"

    @property
    def attainment(self) -> Threshold:
        """The gate: ``attainment>=95%`` carrying the objectives it judges."""
        return Threshold("attainment", ">=", self.target, None, f"attainment>={self.target * 100:g}%",
                         objectives=self.objectives)

    @property
    def goodput(self) -> Threshold:
        """The figure: requests per second that met every objective (shown, not judged)."""
        return Threshold("goodput", "", 0.0, None, "goodput", objectives=self.objectives)

    def describe(self) -> str:
        """``TTFT < 3 s, TPOT < 500 ms, e2e < 15 s for 95 % of requests``."""
        return ", ".join(objective_text(o) for o in self.objectives) + f" for {self.target * 100:g} % of requests"


def objective_text(th: Threshold) -> str:
    """``TTFT < 3 s`` (the bound one request must meet)."""
    name = {"ttft": "TTFT", "itl": "TPOT"}.get(th.metric.split("_", 1)[0], "e2e")
    bound = th.value / 1000
    return f"{name} {th.op} " + (f"{bound:g} s" if bound >= 1 else f"{th.value:g} ms")


def parse_slo(text: str) -> Slo | None:
    """An SLO from its text (module docstring); "" -> None. Raises ``ThresholdError`` saying what is
    wrong: an objective that is not a time percentile with an upper bound, two attainment targets,
    no objective."""
    if not text or not text.strip():
        return None
    objectives, targets = [], []
    for th in parse_thresholds(text):
        if th.metric == "attainment":
            if th.op not in (">=", ">"):
                raise ThresholdError(f"bad SLO {text!r}: write the attainment target as attainment>=95%")
            targets.append(th.value)
        elif th.is_time and th.is_percentile and th.op in ("<", "<=") and th.row is None:
            objectives.append(th)
        else:
            raise ThresholdError(f"bad SLO {text!r}: {th} is not an objective; objectives are time percentiles "
                                 "with an upper bound on TTFT, TPOT or the full duration (ttft_p95<3s, "
                                 "tpot_p95<500ms, p95<15s), plus one attainment>=N%")
    if not objectives:
        raise ThresholdError(f"bad SLO {text!r}: no objective (e.g. ttft_p95<3s,p95<15s,attainment>=95%)")
    if len(targets) > 1:
        raise ThresholdError(f"bad SLO {text!r}: one attainment target, not {len(targets)}")
    return Slo(tuple(objectives), targets[0] if targets else DEFAULT_TARGET, text.strip())


def with_objectives(th: Threshold, slo: Slo) -> Threshold:
    """``th`` (an ``attainment`` or ``goodput`` threshold written by hand) bound to ``slo``'s objectives."""
    return replace(th, objectives=slo.objectives)


def value_of(sample: Sample, objective: Threshold) -> float | None:
    """The figure ``objective`` bounds, for one request (None: the request does not carry it)."""
    attr = FIELDS.get(objective.metric.split("_", 1)[0], "ms")
    return getattr(sample, attr)


def verdict(sample: Sample, objectives: Sequence[Threshold]) -> bool | None:
    """Did one request meet every objective: True, False (failed, or one bound missed), or None
    (succeeded but lacks a figure an objective reads: undetermined)."""
    if not sample.ok or sample.censored:
        return False
    undetermined = False
    for objective in objectives:
        value = value_of(sample, objective)
        if value is None:
            undetermined = True
        elif not objective.passes(value):
            return False
    return None if undetermined else True


@dataclass(frozen=True)
class Tally:
    """How the requests of a run stand against an SLO's objectives."""

    met: int
    missed: int
    failed: int  # of the missed: failed or cut off
    undetermined: int
    by_objective: tuple[tuple[str, int, int], ...]  # (objective, met, judged) for each objective

    @property
    def judged(self) -> int:
        return self.met + self.missed

    @property
    def attainment(self) -> float | None:
        return self.met / self.judged if self.judged else None


def tally(samples: Sequence[Sample], objectives: Sequence[Threshold]) -> Tally:
    verdicts = [verdict(s, objectives) for s in samples]
    per = []
    for objective in objectives:
        ok = [s for s in samples if s.ok and not s.censored and value_of(s, objective) is not None]
        judged = len(ok) + sum(1 for s in samples if not s.ok or s.censored)
        per.append((str(objective), sum(1 for s in ok if objective.passes(value_of(s, objective))), judged))
    return Tally(met=sum(v is True for v in verdicts), missed=sum(v is False for v in verdicts),
                 failed=sum(1 for s in samples if not s.ok or s.censored), undetermined=sum(v is None for v in verdicts),
                 by_objective=tuple(per))


def proportion_interval(met: int, n: int, unknown: int = 0,
                        confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Exact (Clopper–Pearson) interval of a share ``met`` of ``n`` requests, ``unknown`` more that may
    have gone either way (the low end counts them missed, the high end met); (None, None) for none."""
    from scipy.stats import binomtest

    total = n + unknown
    if total == 0:
        return None, None
    low = binomtest(met, total).proportion_ci(confidence, method="exact").low
    high = binomtest(met + unknown, total).proportion_ci(confidence, method="exact").high
    return float(low), float(high)


def goodput(samples: Sequence[Sample], objectives: Sequence[Threshold]) -> float | None:
    """Requests per second that met every objective, over the window of all the run's requests."""
    from harness.load.stats import window_s

    span = window_s(samples)
    if span <= 0:
        return None
    return sum(verdict(s, objectives) is True for s in samples) / span

"""Targets written like k6 thresholds: ``p95<3000ms``, ``fail_ratio<0.03``, ``rps>1``, ``ttft_p95<500ms``.

Grammar (one threshold; several are joined with commas)::

    METRIC[{ROW}] OP VALUE[UNIT]

- METRIC: ``p<N>`` (any percentile, e.g. ``p95``, ``p99.9``), ``min``, ``max``, ``avg``, ``med``,
  ``fail_ratio``, ``rps``, ``count``; for streamed LLM rows also ``ttft_<stat>``, ``itl_<stat>``
  and ``tps_<stat>`` (``<stat>`` one of the above latency stats, e.g. ``ttft_p95``, ``tps_p50``).
  ``tpot_<stat>`` is another name for ``itl_<stat>`` (a request's mean gap between output tokens
  after the first: vLLM's and GuideLLM's *time per output token*), ``e2e_<stat>`` for ``<stat>``
  (the full duration). An SLO (``harness.load.slo``) adds ``attainment`` (the share of requests
  that met every objective, e.g. ``attainment>=95%``) and ``goodput`` (those requests per second).
- ``{ROW}``: judge one row (a request name, e.g. ``p95{chat stream}<20s``); without it, every
  measured request of the scenario together.
- OP: ``<``, ``<=``, ``>``, ``>=``.
- UNIT: ``ms`` or ``s`` for times (stored in ms), ``%`` for ratios (stored as a fraction); none for
  counts, rates, ratios and tokens per second.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from harness.errors import RunbookError


class ThresholdError(RunbookError, ValueError):
    """A threshold that does not follow the grammar of this module."""


_STAT = r"(?:p\d+(?:\.\d+)?|min|max|avg|med)"
_PATTERN = re.compile(
    rf"""^\s*(?P<metric>(?:(?:ttft|itl|tpot|tps|e2e)_{_STAT})|{_STAT}|fail_ratio|rps|count|attainment|goodput)
        \s*(?:\{{(?P<row>[^{{}}]+)\}})?
        \s*(?P<op><=|>=|<|>)
        \s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|%)?\s*$""",
    re.VERBOSE,
)
ALIASES = {"tpot_": "itl_", "e2e_": ""}  # written -> judged (the text keeps what was written)
SLO_METRICS = ("attainment", "goodput")  # judged over an SLO's objectives (``harness.load.slo``)
OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Threshold:
    """One parsed threshold. ``value`` is in ms for times, a fraction for ratios.

    A threshold without an operator (``op == ""``, from ``parse_metric``) names a figure that is
    measured and shown, never judged (e.g. ``ttft_p95`` beside a latency gate). ``objectives``: for
    ``attainment`` and ``goodput``, the SLO's per-request bounds a request must all meet.
    """

    metric: str
    op: str
    value: float
    row: str | None = None
    text: str = ""
    objectives: tuple[Threshold, ...] = ()

    @property
    def is_gate(self) -> bool:
        return bool(self.op)

    @property
    def unit(self) -> str:
        """The unit of the measured value (``harness.result`` units)."""
        if self.is_time:
            return "ms"
        if self.metric == "attainment":
            return "share"  # higher is better, shown in %; no headroom (its miss budget is the point)
        if self.metric == "fail_ratio":
            return "ratio"
        if self.metric == "count":
            return "count"
        return "tok/s" if self.metric.startswith("tps_") else "req/s"

    @property
    def is_time(self) -> bool:
        return self.metric.startswith(("ttft_", "itl_")) or (
            not self.metric.startswith("tps_") and self.metric not in ("fail_ratio", "rps", "count", *SLO_METRICS))

    @property
    def is_percentile(self) -> bool:
        return self.stat.startswith("p")

    @property
    def decided_by_more(self) -> bool:
        """More requests at the same load can decide it while it is undecided: a percentile, a median,
        an SLO's attainment (a maximum or a ratio is decided by the requests allowed, not by more)."""
        return self.is_percentile or self.stat == "med" or self.metric == "attainment"

    @property
    def stat(self) -> str:
        """The statistic without its LLM prefix: ``ttft_p95`` -> ``p95``."""
        return self.metric.split("_", 1)[1] if self.metric.startswith(("ttft_", "itl_", "tps_")) else self.metric

    def passes(self, measured: float) -> bool:
        return OPS[self.op](measured, self.value)

    def format_value(self, value: float | None) -> str:
        """A measured or target value in this threshold's unit."""
        if value is None:
            return "n/a"
        if self.is_time:
            return f"{value:.3f} ms"
        if self.metric == "fail_ratio":
            return f"{value:.4f}"
        if self.metric == "attainment":
            return f"{value * 100:.1f} %"
        if self.metric == "count":
            return f"{int(value)}"
        return f"{value:.3f}" + (" tok/s" if self.metric.startswith("tps_") else " req/s" if self.metric in ("rps", "goodput") else "")

    def __str__(self) -> str:
        return self.text or f"{self.metric}{'{' + self.row + '}' if self.row else ''}{self.op}{self.value}"


def parse_threshold(text: str) -> Threshold:
    """Parse one threshold; raises ``ThresholdError`` saying what is wrong and what is expected."""
    m = _PATTERN.match(text)
    if not m:
        raise ThresholdError(
            f"bad threshold {text!r}: expected METRIC[{{ROW}}] OP VALUE[UNIT], e.g. 'p95<3000ms', "
            "'fail_ratio<0.03', 'rps>1', 'ttft_p95{chat stream}<500ms' (metrics: pN, min, max, avg, med, "
            "fail_ratio, rps, count, ttft_*/itl_*/tpot_*/tps_*/e2e_*, attainment, goodput; ops: < <= > >=; "
            "units: ms, s, %)")
    metric, op, unit = m["metric"], m["op"], m["unit"]
    for written, judged in ALIASES.items():
        if metric.startswith(written):
            metric = judged + metric[len(written):]
    value = float(m["value"])
    probe = Threshold(metric, op, value)
    if probe.is_percentile and not 0 < float(probe.stat[1:]) <= 100:
        raise ThresholdError(f"bad threshold {text!r}: percentile must be in (0, 100]")
    if probe.is_time:
        if unit == "%":
            raise ThresholdError(f"bad threshold {text!r}: {metric} is a time; use ms or s")
        value = value * 1000 if unit == "s" else value  # no unit: milliseconds, like k6
    elif unit in ("ms", "s"):
        raise ThresholdError(f"bad threshold {text!r}: {metric} is not a time; drop the '{unit}'")
    elif unit == "%":
        if metric not in ("fail_ratio", "attainment"):
            raise ThresholdError(f"bad threshold {text!r}: only fail_ratio and attainment take '%'")
        value = value / 100
    if metric == "attainment" and not 0 < value <= 1:
        raise ThresholdError(f"bad threshold {text!r}: attainment is a share of requests, in (0, 1] or (0 %, 100 %]")
    return Threshold(metric, op, value, (m["row"] or "").strip() or None, text.strip())


def parse_metric(text: str) -> Threshold:
    """A figure to show, written like a threshold without its bound: ``ttft_p95``, ``itl_p50{chat stream}``."""
    try:
        probe = parse_threshold(f"{text.strip()}>=0")
    except ThresholdError:
        raise ThresholdError(f"bad figure {text!r}: expected METRIC[{{ROW}}], e.g. 'ttft_p95', "
                             "'itl_p50{chat stream}', 'rps'") from None
    return Threshold(probe.metric, "", 0.0, probe.row, text.strip())


def parse_metrics(text: str | None) -> list[Threshold]:
    """Comma-separated figures to show (``parse_metric``); empty -> []."""
    return [parse_metric(item) for item in _split(text or "") if item.strip()]


def parse_thresholds(text: str | list[str] | None) -> list[Threshold]:
    """Comma-separated thresholds (or a list of them) -> ``Threshold`` objects; empty -> []."""
    if not text:
        return []
    items = text if isinstance(text, list) else _split(text)
    return [parse_threshold(item) for item in items if item.strip()]


def _split(text: str) -> list[str]:
    """Split on commas outside ``{row}`` selectors."""
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts

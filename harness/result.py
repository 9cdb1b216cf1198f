"""``CheckResult``: the one record every harness function returns and every runbook writes.

Two enums give it its vocabulary: ``Stage`` (which part of the release checklist a check belongs to:
environment, bring-up, health, ...) and ``Status`` (one family for checks *and* runbook steps). The
word "phase" is kept for the stack's tier (1-3, ``suite up --phase N``).

A measurement is typed: ``value`` (a float, or None when the check measures nothing numeric) in
``unit`` (``ms``, ``s``, ``req/s``, ``tok/s``, ``ratio``, ``GB``, ...), so runs can be compared
(``harness diff``). ``measured`` is the text shown to people: derived from value and unit when not
given, or an observation that is not a number ("3.11.2", "2 free, 1 ours"). A value estimated from
samples carries its 95 % ``interval`` (``[low, high]``, None for an unbounded end); ``caveat`` says what
limits a result's evidence (measured while the box was contended, beside other load, how many more
requests would decide it) and is repeated in the verdict's reasons.

**Headroom**: a target with one numeric bound (``< 5000 ms``, ``p95<3000ms``, ``>= 5 GB``) is read
back as a number (``Bound``), so every such gate shows measured ÷ target; ``with_headroom`` turns a
PASS with less than ``HEADROOM_WARN`` (20 %) left into a WARN that says so.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from suite.fsio import write_json


class Status(StrEnum):
    """Outcome of a check, and state of a runbook step.

    A check ends ``pass``, ``fail``, ``warn`` or ``skip``, or ``info``: a figure measured and shown
    (TTFT beside a latency gate, server-side counters), never a gate; or ``indeterminate``: a gate the
    evidence cannot decide (a percentile whose confidence interval straddles the target, or one
    measured while the box was contended). An indeterminate gate does not fail its runbook, but the
    run is NO-GO (``harness.verdict``). A step of a run is ``pending``, then
    ``running``, then ``pass``, ``fail`` or ``skip`` (not run because an earlier runbook failed);
    ``not-run`` marks a runbook the run has no record of at all (e.g. never opened in a manual run).
    """

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
    INFO = "info"
    INDETERMINATE = "indeterminate"
    PENDING = "pending"
    RUNNING = "running"
    NOT_RUN = "not-run"

    @classmethod
    def parse(cls, value: str | Status) -> Status:
        """A status from its value, also reading the step words of older run directories."""
        if isinstance(value, Status):
            return value
        return cls(_LEGACY.get(str(value), str(value)))

    @property
    def label(self) -> str:
        """The text shown to people: ``PASS``, ``NOT RUN``."""
        return self.value.replace("-", " ").upper()

    @property
    def is_outcome(self) -> bool:
        """True for the statuses a check can end with."""
        return self in CHECK_OUTCOMES


CHECK_OUTCOMES = (Status.PASS, Status.FAIL, Status.INDETERMINATE, Status.WARN, Status.SKIP, Status.INFO)  # display order
GATE_OUTCOMES = (Status.PASS, Status.FAIL, Status.INDETERMINATE, Status.WARN)  # judged, not skipped or shown
_LEGACY = {"passed": "pass", "failed": "fail", "skipped": "skip"}  # steps.json before one vocabulary


class Stage(StrEnum):
    """The stage of the release checklist a check belongs to, in report order."""

    ENVIRONMENT = "environment"
    BRING_UP = "bring-up"
    HEALTH = "health"
    SMOKE = "smoke"
    SECURITY = "security"
    LOAD = "load"
    FAULT_DRILL = "fault-drill"
    BACKUP = "backup"
    MONITORING = "monitoring"
    REPORT = "report"

    @classmethod
    def parse(cls, value: str | Stage) -> Stage:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown stage {value!r}; stages: {', '.join(s.value for s in cls)}") from None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# Units whose smaller values are better; for the others (req/s, tok/s, GB free) larger is better.
LOWER_IS_BETTER = frozenset({"ms", "s", "ratio", "%"})
_DECIMALS = {"ms": 1, "s": 2, "ratio": 4, "req/s": 2, "tok/s": 1, "GB": 1, "MB": 1, "%": 1}
_LEGACY_MEASURE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|GB|MB|req/s|tok/s|%)\s*$")


def format_measure(value: float | None, unit: str = "") -> str:
    """``1234.5, "ms"`` -> ``"1234.5 ms"``; integers without decimals; None -> ``""``."""
    if value is None:
        return ""
    if math.isnan(value):
        return "n/a"
    if unit in ("", "count"):
        return f"{value:.10g}"
    if unit == "ratio":
        return f"{value:.4f}"
    if unit == "share":  # of requests (an SLO's attainment): higher is better
        return f"{value * 100:.1f} %"
    return f"{value:.{_DECIMALS.get(unit, 3)}f} {unit}"


@dataclass
class CheckResult:
    id: str
    title: str
    stage: Stage
    status: Status
    target: str = ""
    value: float | None = None
    unit: str = ""
    measured: str = ""  # display text; derived from value and unit when empty
    evidence: list[str] = field(default_factory=list)
    detail: str = ""
    started_at: str = field(default_factory=now_iso)
    duration_s: float = 0.0
    interval: list[float | None] | None = None  # 95 % confidence interval of value, [low, high]; None: unbounded end
    caveat: str = ""  # what limits the evidence (contention, extra load, more requests needed); in the verdict

    def __post_init__(self) -> None:
        self.stage = Stage.parse(self.stage)
        self.status = Status(self.status)
        if not self.status.is_outcome:
            raise ValueError(f"a check ends {', '.join(CHECK_OUTCOMES)}; got {self.status.value!r}")
        if isinstance(self.evidence, str):
            self.evidence = [self.evidence]
        self.measured = "" if self.measured is None else str(self.measured)
        if self.value is None and (legacy := _LEGACY_MEASURE.match(self.measured)):
            # "12.3 ms" from an older result file (or code): keep the number typed
            self.value, self.unit = float(legacy.group(1)), legacy.group(2)
        if self.value is not None:
            self.value = float(self.value)
            self.measured = self.measured or format_measure(self.value, self.unit)
        if self.interval is not None:  # an unbounded end is None (JSON has no infinity)
            self.interval = [None if x is None or math.isinf(x) else float(x) for x in self.interval]

    @classmethod
    def skipped(cls, id: str, title: str, stage: Stage | str, *, detail: str,
                measured: str = "not applicable", **fields: Any) -> CheckResult:
        """The one way to say a check did not run here: ``skip``, with why in its detail (never empty)."""
        if not detail.strip():
            raise ValueError(f"{id}: a skip says why")
        return cls(id, title, stage, Status.SKIP, measured=measured, detail=detail, **fields)

    @classmethod
    def below_phase(cls, phase: int, needed: int, id: str, title: str, stage: Stage | str) -> CheckResult | None:
        """``skip`` when the stack's phase lacks the services a check needs (``needed``), else None."""
        if phase >= needed:
            return None
        return cls.skipped(id, title, stage, target=f"phase >= {needed}", measured="not run",
                           detail=f"phase {phase} run: this check needs the services of phase {needed}")

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAIL

    @property
    def is_gate(self) -> bool:
        """Judged (pass/fail/indeterminate/warn), as opposed to skipped or shown for information."""
        return self.status in GATE_OUTCOMES

    @property
    def bound(self) -> Bound | None:
        """The target as a number in ``unit`` (``parse_bound``), or None when it has none."""
        return parse_bound(self.target, self.unit) if self.value is not None else None

    @property
    def ratio(self) -> float | None:
        """Measured ÷ target (p95 2.63 s of 3 s -> 0.88), for a gate with one numeric bound."""
        bound = self.bound
        if bound is None or not bound.limit or self.value is None:
            return None
        return self.value / bound.limit

    @property
    def headroom(self) -> float | None:
        """How much of the target is left: 1 - measured/target for an upper bound, 1 - target/measured
        for a lower bound (``rps>1`` at 1.1 req/s: 9 %); negative when the gate is lost."""
        bound, ratio = self.bound, self.ratio
        if ratio is None or bound is None:
            return None
        if bound.upper:
            return 1 - ratio
        return 1 - 1 / ratio if ratio > 0 else -math.inf

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)

        d["stage"], d["status"] = self.stage.value, self.status.value
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        data = dict(data)
        if "stage" not in data and "phase" in data:  # result files written before the rename
            data["stage"] = data.pop("phase")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def __str__(self) -> str:
        return f"[{self.status.label:4}] {self.id}: {self.title} — {self.measured} ({self.detail})"


HEADROOM_WARN = 0.20  # a gate that passed with less than this much of its target left is a warning
_BOUND = re.compile(r"(<=|>=|≤|≥|<|>)\s*(-?\d+(?:\.\d+)?)\s*(ms|s|%|GB|MB)?(?![\w.])")
# a target that is one bound: an optional metric name or words before it, plain words after it
# ("p95<3s", "< 5000 ms", "outside the stack < 20 % of the CPU"); "0.5 < cosine < 0.999" bounds
# something other than the value, "2 x 384 dims, ..." is no bound
_ONE_BOUND = re.compile(r"[A-Za-z_][\w. ]*?\s*(<=|>=|≤|≥|<|>)\s*-?\d+(?:\.\d+)?\s*(ms|s|%|GB|MB)?(\s+[A-Za-z][A-Za-z ]*)?"
                        r"|\s*(<=|>=|≤|≥|<|>)\s*-?\d+(?:\.\d+)?\s*(ms|s|%|GB|MB)?(\s+[A-Za-z][A-Za-z ]*)?")
_SCALE = {("s", "ms"): 1000.0, ("ms", "s"): 0.001, ("%", "ratio"): 0.01}


@dataclass(frozen=True)
class Bound:
    """A target's one numeric bound, in the unit of the measured value."""

    op: str  # <, <=, >, >=
    limit: float

    @property
    def upper(self) -> bool:
        return self.op in ("<", "<=")


def parse_bound(target: str, unit: str) -> Bound | None:
    """``"p95<3000ms"``, ``"< 5000 ms"``, ``"≤ 900 s"``, ``">= 5 GB"`` -> a ``Bound`` in ``unit``; None
    when the target has no bound, several, or one in a unit that does not convert to ``unit``."""
    found = _BOUND.findall(target or "")
    if len(found) != 1 or not _ONE_BOUND.fullmatch((target or "").strip()):
        return None
    op, number, target_unit = found[0]
    op = {"≤": "<=", "≥": ">="}.get(op, op)
    limit = float(number)
    if target_unit and target_unit != unit:
        if (target_unit, unit) not in _SCALE:
            return None
        limit *= _SCALE[(target_unit, unit)]
    elif not target_unit and unit in ("ms", "s", "GB", "MB", "%"):
        if unit != "ms":  # a bare number is milliseconds only for times (k6's habit, the load thresholds')
            return None
    return Bound(op, limit)


def with_headroom(result: CheckResult) -> CheckResult:
    """A PASS with less than ``HEADROOM_WARN`` of its target left becomes a WARN saying so (in place)."""
    headroom = result.headroom
    if result.status is Status.PASS and headroom is not None and headroom < HEADROOM_WARN:
        result.status = Status.WARN
        note = (f"passed with {max(headroom, 0) * 100:.0f} % headroom (measured ÷ target {result.ratio * 100:.0f} %; "
                f"a warning under {HEADROOM_WARN * 100:.0f} %)")
        result.detail = f"{note}; {result.detail}" if result.detail else note
    return result


def format_interval(result: CheckResult) -> str:
    """``1.21 s – 1.98 s``-style text of a result's 95 % interval (``∞`` for an unbounded end)."""
    if result.interval is None:
        return ""
    low, high = result.interval
    return (f"{'0' if low is None else format_measure(low, result.unit)} – "
            f"{'∞' if high is None else format_measure(high, result.unit)}")


class Timer:
    """Measures a check: ``with timed() as t: ...; CheckResult(..., **t.fields())``."""

    def __init__(self) -> None:
        self.started_at = now_iso()
        self._t0 = time.perf_counter()
        self.duration_s = 0.0

    def stop(self) -> float:
        self.duration_s = round(time.perf_counter() - self._t0, 3)
        return self.duration_s

    def fields(self) -> dict[str, Any]:
        if not self.duration_s:
            self.stop()
        return {"started_at": self.started_at, "duration_s": self.duration_s}


@contextmanager
def timed() -> Iterator[Timer]:
    t = Timer()
    try:
        yield t
    finally:
        t.stop()


def save_results(results: Iterable[CheckResult], path: Path) -> Path:
    """Write results as JSON crash-safe (``suite.fsio``: a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, [r.to_dict() for r in results], default=str)


def load_results(path: Path) -> list[CheckResult]:
    return [CheckResult.from_dict(d) for d in json.loads(Path(path).read_text())]


def summarize(results: Iterable[CheckResult]) -> dict[str, int]:
    counts = {s.value: 0 for s in CHECK_OUTCOMES}
    for r in results:
        counts[r.status.value] += 1
    return counts


"""``CheckResult``: the one record every harness function returns and every runbook writes.

Two enums give it its vocabulary: ``Stage`` (which part of the release checklist a check belongs to:
environment, bring-up, health, ...) and ``Status`` (one family for checks *and* runbook steps). The
word "phase" is kept for the stack's tier (1-3, ``suite up --phase N``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any


class Status(StrEnum):
    """Outcome of a check, and state of a runbook step.

    A check ends ``pass``, ``fail``, ``warn`` or ``skip``. A step of a run is ``pending``, then
    ``running``, then ``pass``, ``fail`` or ``skip`` (not run because an earlier runbook failed);
    ``not-run`` marks a runbook the run has no record of at all (e.g. never opened in a manual run).
    """

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"
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


CHECK_OUTCOMES = (Status.PASS, Status.FAIL, Status.WARN, Status.SKIP)  # in display order
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


@dataclass
class CheckResult:
    id: str
    title: str
    stage: Stage
    status: Status
    target: str = ""
    measured: Any = None
    evidence: list[str] = field(default_factory=list)
    detail: str = ""
    started_at: str = field(default_factory=now_iso)
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        self.stage = Stage.parse(self.stage)
        self.status = Status(self.status)
        if not self.status.is_outcome:
            raise ValueError(f"a check ends {', '.join(CHECK_OUTCOMES)}; got {self.status.value!r}")
        if isinstance(self.evidence, str):
            self.evidence = [self.evidence]

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAIL

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
    """Write results as JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([r.to_dict() for r in results], indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)
    return path


def load_results(path: Path) -> list[CheckResult]:
    return [CheckResult.from_dict(d) for d in json.loads(Path(path).read_text())]


def summarize(results: Iterable[CheckResult]) -> dict[str, int]:
    counts = {s.value: 0 for s in CHECK_OUTCOMES}
    for r in results:
        counts[r.status.value] += 1
    return counts


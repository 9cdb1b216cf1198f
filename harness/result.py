"""``CheckResult``: the one record every harness function returns and every runbook writes."""

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
    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class CheckResult:
    id: str
    title: str
    phase: str
    status: Status
    target: str = ""
    measured: Any = None
    evidence: list[str] = field(default_factory=list)
    detail: str = ""
    started_at: str = field(default_factory=now_iso)
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        self.status = Status(self.status)
        if isinstance(self.evidence, str):
            self.evidence = [self.evidence]

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAIL

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def __str__(self) -> str:
        return f"[{self.status.value.upper():4}] {self.id}: {self.title} — {self.measured} ({self.detail})"


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
    counts = {s.value: 0 for s in Status}
    for r in results:
        counts[r.status.value] += 1
    return counts

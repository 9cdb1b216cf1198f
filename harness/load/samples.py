"""Raw per-request samples written by ``load/_common.py``: read, merge, and split off the warm-up.

Each Locust process appends JSON lines to its own ``samples-<pid>.jsonl``; a run's files are merged
into one ``samples.jsonl`` ordered by start time, which is what every statistic is computed from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from suite.fsio import write_atomic

log = logging.getLogger(__name__)

MERGED = "samples.jsonl"


@dataclass(frozen=True)
class Sample:
    """One request as the load generator saw it. ``start`` is epoch seconds, ``ms`` the full duration.

    ``censored``: the request was still running when the run stopped (cut off at the time cap, or
    stopped early) and was written by the locustfile as it quit: a failure whose true duration is at
    least ``ms``."""

    name: str
    start: float
    ms: float
    ok: bool
    type: str = "POST"
    bytes: int = 0
    error: str | None = None
    warmup: bool = False
    pid: int = 0
    ttft_ms: float | None = None
    itl_ms: float | None = None
    tps: float | None = None
    tokens: int | None = None
    censored: bool = False

    @property
    def end(self) -> float:
        return self.start + self.ms / 1000

    @classmethod
    def from_dict(cls, data: dict) -> Sample:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_samples(path: Path) -> list[Sample]:
    """Samples of one JSON-lines file; a half-written last line (process killed mid-write) is skipped."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(Sample.from_dict(json.loads(line)))
            except (ValueError, TypeError) as exc:
                log.warning("%s line %d skipped: %s", path, number, exc)
    return out


def sample_files(folder: Path) -> list[Path]:
    """The per-process files of a run (not the merged file)."""
    return sorted(p for p in Path(folder).glob("samples-*.jsonl"))


def merge_samples(files: Iterable[Path], target: Path | None = None) -> list[Sample]:
    """All samples of several files, ordered by start time; written to ``target`` when given."""
    merged = sorted((s for f in files for s in read_samples(Path(f))), key=lambda s: (s.start, s.pid))
    if target is not None:
        write_samples(merged, Path(target))
    return merged


def write_samples(samples: Iterable[Sample], target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for s in samples:
        row = {k: v for k, v in asdict(s).items() if v is not None}
        if not s.censored:
            del row["censored"]  # the usual case: the raw files stay as the locustfiles write them
        lines.append(json.dumps(row) + "\n")
    return write_atomic(target, "".join(lines))


def split_warmup(samples: Iterable[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(measured, warm-up): warm-up samples are recorded but never judged."""
    measured, warm = [], []
    for s in samples:
        (warm if s.warmup else measured).append(s)
    return measured, warm

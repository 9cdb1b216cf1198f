"""Log scan (the seeds' "log error analysis"): every service's JSON log lines at ERROR or CRITICAL
since the run began, counted per service, the newest kept as evidence.

Lines that are not JSON (a traceback printed before logging was configured, a crash of the
interpreter) count when they look like one (``Traceback``, ``Error:``, ``Fatal``), under level RAW.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from harness.result import CheckResult, Stage, Status, timed
from suite.fsio import write_json

LEVELS = ("ERROR", "CRITICAL")
RAW_ERROR = re.compile(r"^(Traceback \(most recent call last\)|Fatal Python error|\w*Error: )")
STAGE = Stage.MONITORING


@dataclass(frozen=True)
class LogError:
    service: str
    ts: str
    level: str
    msg: str
    line: int

    def short(self) -> str:
        return f"{self.ts} {self.service} {self.level}: {self.msg[:200]}"


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def scan_file(service: str, path: Path, since: datetime) -> list[LogError]:
    """ERROR/CRITICAL lines of one service's log written at or after ``since``.

    A raw (non-JSON) error line has no time of its own: it takes the time of the JSON line before it
    and counts when that one is recent (or when it is the first line of a file written since)."""
    if not path.is_file():
        return []
    found: list[LogError] = []
    last_ts: datetime | None = None
    written_since = datetime.fromtimestamp(path.stat().st_mtime, UTC) >= since
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                last_ts = _parse_ts(entry.get("ts")) or last_ts
                level = str(entry.get("level", "")).upper()
                if level in LEVELS and last_ts is not None and last_ts >= since:
                    msg = str(entry.get("msg", ""))
                    if entry.get("exc"):
                        msg += " | " + str(entry["exc"]).strip().splitlines()[-1]
                    found.append(LogError(service, entry.get("ts", ""), level, msg, number))
            elif RAW_ERROR.match(line) and ((last_ts is not None and last_ts >= since)
                                            or (last_ts is None and written_since)):
                stamp = last_ts.isoformat() if last_ts else ""
                found.append(LogError(service, stamp, "RAW", line, number))
    return found


def scan_logs(logs: dict[str, Path], since: datetime, evidence_file: Path | None = None,
              newest: int = 5, fail_on_errors: bool = False) -> CheckResult:
    """One result for every service's log: counts per service, the ``newest`` lines in the detail,
    all of them (up to 500, newest first) in ``evidence_file``."""
    with timed() as t:
        per_service = {name: scan_file(name, path, since) for name, path in logs.items()}
    every = sorted((e for errs in per_service.values() for e in errs), key=lambda e: e.ts, reverse=True)
    counts = {name: len(errs) for name, errs in per_service.items()}
    evidence = []
    if evidence_file is not None:
        evidence_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(evidence_file, {"since": since.isoformat(), "counts": counts,
                                   "lines": [asdict(e) for e in every[:500]]})
        evidence.append(str(evidence_file))
    missing = [name for name, path in logs.items() if not path.is_file()]
    status = Status.PASS if not every else (Status.FAIL if fail_on_errors else Status.WARN)
    by_service = ", ".join(f"{n} {c}" for n, c in counts.items() if c) or "none"
    detail = [f"since {since.isoformat(timespec='seconds')}; per service: {by_service}"]
    detail += [e.short() for e in every[:newest]]
    if missing:
        detail.append("no log file for: " + ", ".join(missing))
    return CheckResult("monitor.logs", "ERROR/CRITICAL log lines since the run began", STAGE, status,
                       target="no ERROR/CRITICAL lines" + (" (required)" if fail_on_errors else ""),
                       measured=f"{len(every)} line(s) in {sum(1 for c in counts.values() if c)} service(s)",
                       evidence=evidence, detail="\n".join(detail), **t.fields())


def run_started(run_json: dict | None, fallback: timedelta = timedelta(hours=1)) -> datetime:
    """When the run began (``run.json``), or ``fallback`` ago for a runbook opened by hand."""
    started = _parse_ts((run_json or {}).get("started_at"))
    return started or datetime.now(UTC) - fallback

"""What the watch records about exits and restarts, and how ``suite status`` reads it back.

``state.json`` holds one entry per service (restarts since supervisord started, the last exit, a
start limit hit); ``exits.jsonl`` keeps every exit, one JSON line each. supervisord does not hand its
event listeners the exit status, so the status is read from its own log line for the exit
(``exited: NAME (terminated by SIGKILL; not expected)``), which it writes before the event goes out.
"""

from __future__ import annotations

import json
import re
import signal
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

EXIT_LINE = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3}) \w+ "
                       r"exited: (?P<name>\S+) \((?P<how>exit status (?P<code>-?\d+)|terminated by "
                       r"(?P<sig>SIG\w+)|[^;]*)[^;]*; (?P<expected>not expected|expected)\)")


@dataclass
class Exit:
    """One exit of a service."""

    service: str
    time: float
    pid: int | None = None
    exit_code: int | None = None
    signal: str | None = None
    expected: bool = False
    cause: str = ""  # why, when the supervisor knows (liveness kill, start limit)
    restarts: int = 0  # automatic restarts of this service before this exit

    @property
    def at(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).isoformat(timespec="seconds")

    def describe(self) -> str:
        """``signal 9 (SIGKILL)``, ``exit status 1``, plus the cause when known."""
        if self.signal:
            num = getattr(signal, self.signal, None)
            how = f"signal {int(num)} ({self.signal})" if num is not None else self.signal
        elif self.exit_code is not None:
            how = f"exit status {self.exit_code}"
        else:
            how = "exited"
        return f"{how}; {self.cause}" if self.cause else how


@dataclass
class ServiceRecord:
    restarts: int = 0
    restart_times: list[float] = field(default_factory=list)  # within the start-limit window
    last_exit: Exit | None = None
    start_limit: str = ""  # set when the watch stopped restarting it

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ServiceRecord:
        exit_ = data.get("last_exit")
        return cls(restarts=int(data.get("restarts", 0)), restart_times=list(data.get("restart_times", [])),
                   last_exit=Exit(**exit_) if exit_ else None, start_limit=data.get("start_limit", ""))


@dataclass(frozen=True)
class ExitLine:
    service: str
    time: float
    exit_code: int | None
    signal: str | None
    expected: bool


def parse_exit_line(line: str) -> ExitLine | None:
    """A supervisord ``exited:`` log line (its time stamp is local time, to the millisecond)."""
    m = EXIT_LINE.search(line)
    if not m:
        return None
    when = time.mktime(time.strptime(m["ts"], "%Y-%m-%d %H:%M:%S")) + int(m["ms"]) / 1000
    code = int(m["code"]) if m["code"] is not None else None
    return ExitLine(m["name"], when, code, m["sig"], m["expected"] == "expected")


def read_state(path: Path) -> dict[str, ServiceRecord]:
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return {name: ServiceRecord.from_dict(rec) for name, rec in data.get("services", {}).items()}


def write_state(path: Path, records: dict[str, ServiceRecord]) -> None:
    from suite.supervisor.supervisord import write_private

    write_private(Path(path), json.dumps({"updated": time.time(),
                                          "services": {k: v.to_dict() for k, v in records.items()}}, indent=1))


def append_exit(path: Path, exit_: Exit) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({**asdict(exit_), "at": exit_.at}) + "\n")


def read_exits(path: Path, service: str | None = None, since: float = 0.0) -> list[Exit]:
    """Recorded exits (of one service, after a time), oldest first."""
    out = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    known = set(Exit.__dataclass_fields__)
    for line in lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        exit_ = Exit(**{k: v for k, v in data.items() if k in known})
        if (service is None or exit_.service == service) and exit_.time >= since:
            out.append(exit_)
    return out

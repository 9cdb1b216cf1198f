"""Waivers: accepted exceptions for a release, each with a justification, an owner and an expiry.

A waiver file (``waivers.toml``, given to ``harness run --waivers FILE``) lists check-id patterns
(``fnmatch``: ``*``, ``?``, ``[...]``)::

    [[waiver]]
    check = "env.gpu"
    justification = "the staging box has no GPU; the gpu profile is certified on the release box"
    owner = "release-manager@example.org"
    expires = 2026-12-31          # a TOML date: the waiver applies through this day (UTC)

A failed, indeterminate or warning check that a waiver in force matches is *waived*: shown as WAIVED with its
measured value and the waiver's reason, and it does not make the run NO-GO. The result files keep
the check as measured (``fail``); the waiver is a judgement laid over them, by the verdict, the
report, JUnit and the attestation alike.

What is refused (``WaiverError``; ``harness run`` exits 2 before anything starts): a file that is not
TOML, a waiver without ``check``, ``justification``, ``owner`` or ``expires`` (no waiver is forever),
an unknown key (``expiry`` for ``expires`` would otherwise be a waiver without expiry), and a pattern
that waives a whole stage or more: its first part must be literal and something literal must follow
(``load.*``, ``env*``, ``*``, ``*.p95`` are refused; ``load.*.p95``, ``env.gpu*`` are not). A waiver
that still matches every gate of a stage in a run (two gates or more) is not applied and makes the
run NO-GO, whatever its pattern looked like.

Expiry is judged on the day the run started (a rebuilt report judges the same run the same way). An
expired waiver waives nothing and is a failure of the run: renew it (a new date, a new justification)
or remove it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from harness.errors import RunbookError
from harness.result import CheckResult, Status
from suite.fsio import write_atomic

FILE_NAME = "waivers.toml"  # the run's copy, in the run directory
KEYS = ("check", "justification", "owner", "expires")
WAIVABLE = (Status.FAIL, Status.INDETERMINATE, Status.WARN)
_WILD = re.compile(r"\[[^\]]*\]|[*?]")


class WaiverError(RunbookError):
    """A waiver file that cannot be used: unreadable, incomplete, or waiving a whole stage."""


@dataclass(frozen=True)
class Waiver:
    index: int  # 1-based, in file order: "waiver 2"
    check: str
    justification: str
    owner: str
    expires: date

    def matches(self, check_id: str) -> bool:
        return fnmatch.fnmatchcase(check_id, self.check)

    def expired(self, on: date) -> bool:
        return on > self.expires

    @property
    def label(self) -> str:
        return f"waiver {self.index} `{self.check}` (owner {self.owner}, expires {self.expires.isoformat()})"

    def to_dict(self) -> dict[str, str | int]:
        return {"index": self.index, "check": self.check, "justification": self.justification,
                "owner": self.owner, "expires": self.expires.isoformat()}


def whole_stage(pattern: str) -> str | None:
    """Why ``pattern`` waives a whole stage (or more), or None when it names something narrower."""
    first, _, rest = pattern.partition(".")
    if not first or _WILD.search(first):
        return "its first part is not literal, so it reaches into every stage"
    if not rest:
        return f"{first!r} is a prefix, not a check (check ids read env.ports, load.rag.p95)"
    if not _WILD.sub("", rest).strip("."):
        return f"it matches every check whose id starts with {first!r}"
    return None


def _date(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date() if value.tzinfo else value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


def parse(text: str, source: str = FILE_NAME) -> list[Waiver]:
    """The waivers of a file's text; ``WaiverError`` naming the waiver and the problem otherwise."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WaiverError(f"{source} is not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"waiver"})
    if extra:
        raise WaiverError(f"{source}: unknown top-level key(s) {', '.join(extra)}; write each waiver as a "
                          f"[[waiver]] table with {', '.join(KEYS)}")
    items = data.get("waiver", [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise WaiverError(f"{source}: 'waiver' must be an array of tables ([[waiver]])")
    out = []
    for n, item in enumerate(items, 1):
        where = f"{source}: waiver {n}" + (f" ({item['check']!r})" if isinstance(item.get("check"), str) else "")
        unknown = sorted(set(item) - set(KEYS))
        if unknown:
            raise WaiverError(f"{where} has unknown key(s) {', '.join(unknown)}; a waiver has {', '.join(KEYS)}")
        missing = [k for k in KEYS if k != "expires" and not (isinstance(item.get(k), str) and item[k].strip())]
        if missing:
            raise WaiverError(f"{where} has no {' / '.join(missing)}: every waiver says which check, why, and who "
                              f"owns it")
        if "expires" not in item:
            raise WaiverError(f"{where} has no expiry: add `expires = YYYY-MM-DD` (no waiver is forever)")
        expires = _date(item["expires"])
        if expires is None:
            raise WaiverError(f"{where}: expires = {item['expires']!r} is not a date (write expires = 2026-12-31)")
        pattern = item["check"].strip()
        if why := whole_stage(pattern):
            raise WaiverError(f"{where} waives a whole stage ({why}); name the checks, e.g. env.gpu or "
                              f"load.*.p95")
        out.append(Waiver(n, pattern, item["justification"].strip(), item["owner"].strip(), expires))
    return out


def load(path: Path) -> list[Waiver]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WaiverError(f"cannot read the waiver file {path}: {exc}") from None
    return parse(text, path.name)


def install(source: Path, run_dir: Path) -> dict[str, object]:
    """Check a waiver file and copy it, byte for byte, into the run directory; what ``run.json`` records."""
    source = Path(source)
    waivers = load(source)  # refuses before the copy
    data = source.read_bytes()
    write_atomic(Path(run_dir) / FILE_NAME, data)
    return {"source": str(source.resolve()), "file": FILE_NAME, "sha256": hashlib.sha256(data).hexdigest(),
            "count": len(waivers)}


@dataclass
class Applied:
    """One waiver's use in a run."""

    waiver: Waiver
    waived: list[CheckResult] = field(default_factory=list)  # failures and warnings it waived
    covered: list[CheckResult] = field(default_factory=list)  # what it matched but may not waive (expired)
    refused: str = ""  # why it was not applied at all (it matches a whole stage of this run)


@dataclass
class Judgement:
    """Waivers laid over a run's results: which check each waived, which are expired or refused."""

    waivers: list[Waiver]
    as_of: date
    applied: list[Applied]
    by_check: dict[str, Waiver]
    error: str = ""  # the run's waiver file could not be read

    def waiver_for(self, result: CheckResult) -> Waiver | None:
        """The waiver in force that waives this result, if any."""
        return self.by_check.get(result.id) if result.status in WAIVABLE else None

    def waived(self, result: CheckResult) -> bool:
        return self.waiver_for(result) is not None

    @property
    def used(self) -> list[Applied]:
        return [a for a in self.applied if a.waived]

    @property
    def expired(self) -> list[Applied]:
        return [a for a in self.applied if a.waiver.expired(self.as_of)]

    @property
    def refused(self) -> list[Applied]:
        return [a for a in self.applied if a.refused]

    @property
    def unused(self) -> list[Applied]:
        return [a for a in self.applied if not a.waived and not a.refused and not a.waiver.expired(self.as_of)]

    def problems(self) -> list[tuple[str, int]]:
        """What the waivers themselves make NO-GO, each with its waiver's number (0: the file): an
        unreadable file, expired waivers, waivers refused for covering a whole stage."""
        out = [(f"the run's {FILE_NAME} cannot be used: {self.error}", 0)] if self.error else []
        for a in self.expired:
            hit = f"; it would cover {', '.join(r.id for r in a.covered)}" if a.covered else ""
            out.append((f"{a.waiver.label} expired on {a.waiver.expires.isoformat()}{hit}", a.waiver.index))
        out += [(f"{a.waiver.label} {a.refused}: not applied", a.waiver.index)
                for a in self.refused if not a.waiver.expired(self.as_of)]
        return out


def judge(waivers: list[Waiver], results: list[CheckResult], as_of: date, error: str = "") -> Judgement:
    """Which results each waiver waives on ``as_of``; the first waiver in file order wins a check."""
    gates_by_stage: dict[str, list[CheckResult]] = defaultdict(list)
    for r in results:
        if r.is_gate:
            gates_by_stage[r.stage.value].append(r)
    applied, by_check = [], {}
    for w in waivers:
        a = Applied(w)
        for stage, gates in gates_by_stage.items():
            if len(gates) >= 2 and all(w.matches(r.id) for r in gates):
                a.refused = f"matches every gate of stage {stage} in this run"
        hits = [r for r in results if r.status in WAIVABLE and w.matches(r.id) and r.id not in by_check]
        if w.expired(as_of):
            a.covered = hits
        elif not a.refused:
            a.waived = hits
            by_check.update((r.id, w) for r in hits)
        applied.append(a)
    return Judgement(waivers, as_of, applied, by_check, error)


def run_date(meta: dict) -> date:
    """The day a run started (UTC), which its waivers are judged on; today for a run with no start."""
    started = meta.get("started_at")
    try:
        return datetime.fromisoformat(started).astimezone(UTC).date() if started else datetime.now(UTC).date()
    except (TypeError, ValueError):
        return datetime.now(UTC).date()


def for_run(run_dir: Path, meta: dict, results: list[CheckResult]) -> Judgement:
    """The waivers of a run directory (its ``waivers.toml``; none when absent) judged over ``results``."""
    path = Path(run_dir) / FILE_NAME
    as_of = run_date(meta)
    if not path.is_file():
        return judge([], results, as_of)
    try:
        return judge(load(path), results, as_of)
    except WaiverError as exc:
        return judge([], results, as_of, error=str(exc))

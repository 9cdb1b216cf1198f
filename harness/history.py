"""Runs over time: list the run directories, find a run's predecessor, diff two runs.

Everything is read from the run directories themselves (``run.json``, ``steps.json``,
``results/*.json``): no database. Runs are comparable when they ran the same sequence with the same
load profile on the same settings profile (cpu / gpu); ``previous_run`` picks the latest such run that
started before a given one. A diff matches checks by id: gates whose status changed, the change of
every typed measurement both runs have (with its direction: lower is better for times and failure
ratios, higher for throughput), warnings that are new, checks only one run has.

**A change is called better or worse only beyond its own noise** (``Delta.better``):

- a figure estimated from samples (a load percentile, with its 95 % ``interval`` in both runs) only
  when the two intervals do not overlap — the distributions moved, not the draw;
- a one-shot figure (a health probe's latency, a smoke request's: one measurement each run) only when
  at least ``MIN_HISTORY`` earlier comparable runs measured it and the new value lies beyond their
  range by more than that range again (and by ``NOISE_PCT``): two GO runs of the same pipeline on the
  same quiet box moved probe latencies by up to 70 %, so a single pair says nothing;
- any other figure (throughput, failure ratios, the box's readings) when it moved more than
  ``NOISE_PCT``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.result import LOWER_IS_BETTER, CheckResult, Stage, Status, format_measure, summarize
from harness.rundir import RunDir, default_runs_dir
from harness.verdict import Verdict, judge, load_run

KEY_FIGURES = ("p95", "rps", "ttft_p95")  # per load scenario, in this order, for `harness list`
# Two GO runs of the same pipeline on the same quiet 2-core box moved probe latencies by up to 70 % and
# load p95s by 5-17 %: smaller changes are not called better or worse (`harness diff --noise` changes it).
NOISE_PCT = 10.0
MIN_HISTORY = 3  # earlier runs that must have measured a one-shot figure before a change of it is called
HISTORY_RUNS = 10  # the latest earlier comparable runs a one-shot figure's spread is taken from


@dataclass
class RunSummary:
    run: RunDir
    meta: dict
    verdict: Verdict
    counts: dict[str, int]
    figures: list[CheckResult]

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def started_at(self) -> str:
        return self.meta.get("started_at", "")

    @property
    def comparable_key(self) -> tuple:
        return (self.meta.get("sequence"), self.meta.get("profile"), self.meta.get("settings_profile"),
                bool(self.meta.get("manual")))

    def line(self) -> str:
        """One line of ``harness list``."""
        meta = self.meta
        kind = "manual" if meta.get("manual") else f"{meta.get('sequence', '?')}/{meta.get('profile') or '-'}"
        sha = (meta.get("git_sha") or "")[:9] or "-"
        counts = ", ".join(f"{n} {k}" for k, n in self.counts.items() if n)
        figures = ", ".join(f"{_short(r)} {format_measure(r.value, r.unit)}" for r in self.figures[:3])
        return (f"{self.run_id:<34} {self.verdict.label:<7} {self.started_at[:16].replace('T', ' '):<16} "
                f"{sha:<9} {kind:<16} {counts:<30} {figures}")


def _short(r: CheckResult) -> str:
    return r.id.removeprefix("load.").replace(".run", " req/s").replace(".", " ")


def summarize_run(path: Path) -> RunSummary:
    run = RunDir(Path(path))
    record = load_run(run.path)
    return RunSummary(run, record.meta, judge(record), summarize(record.results),
                      key_figures(record.results))


def key_figures(results: list[CheckResult]) -> list[CheckResult]:
    """The load figures a reader looks for first: each scenario's p95, throughput, TTFT p95."""
    def kind(r: CheckResult) -> str:
        return "rps" if r.id.endswith(".run") else r.id.rsplit(".", 1)[-1]

    return sorted((r for r in results if r.value is not None and r.stage is Stage.LOAD and kind(r) in KEY_FIGURES),
                  key=lambda r: KEY_FIGURES.index(kind(r)))


def list_runs(runs_dir: Path | None = None) -> list[RunSummary]:
    """Every run directory (with a ``run.json``) under ``runs_dir``, oldest first."""
    root = Path(runs_dir or default_runs_dir())
    found = [summarize_run(p) for p in root.iterdir() if (p / "run.json").is_file()] if root.is_dir() else []
    return sorted(found, key=lambda s: (s.started_at, s.run_id))


def previous_run(path: Path, runs_dir: Path | None = None) -> RunSummary | None:
    """The latest finished run that started before ``path``'s run and is comparable with it."""
    this = summarize_run(path)
    root = Path(runs_dir) if runs_dir else Path(path).resolve().parent
    earlier = [s for s in list_runs(root) if s.run_id != this.run_id and s.started_at < this.started_at
               and s.comparable_key == this.comparable_key and s.meta.get("finished_at")]
    return earlier[-1] if earlier else None


@dataclass
class Delta:
    id: str
    title: str
    unit: str
    before: float
    after: float
    noise_pct: float = NOISE_PCT
    intervals: tuple[list, list] | None = None  # both runs' 95 % intervals: a figure estimated from samples
    history: list[float] | None = None  # a one-shot figure: its values in earlier comparable runs

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def percent(self) -> float | None:
        return None if not self.before else 100 * self.change / abs(self.before)

    @property
    def better(self) -> bool | None:
        """True when the change is an improvement, False when a regression, None when it is within its
        noise (module docstring)."""
        if math.isclose(self.after, self.before, rel_tol=1e-9, abs_tol=1e-12):
            return None
        improved = (self.change < 0) == (self.unit in LOWER_IS_BETTER)
        if self.intervals is not None:
            (b_low, b_high), (a_low, a_high) = self.intervals
            below = a_high is not None and b_low is not None and a_high < b_low
            above = a_low is not None and b_high is not None and a_low > b_high
            return improved if below or above else None
        if self.percent is not None and abs(self.percent) < self.noise_pct:
            return None
        if self.history is not None:
            if len(self.history) < MIN_HISTORY:
                return None
            low, high = min(self.history), max(self.history)
            width = high - low
            if low - width <= self.after <= high + width:
                return None
        return improved

    @property
    def noise(self) -> str:
        """How this change was judged: ``95 % intervals overlap``, ``within 4 earlier runs' spread``."""
        if self.intervals is not None:
            return "95 % intervals " + ("overlap" if self.better is None else "apart")
        if self.history is not None:
            if len(self.history) < MIN_HISTORY:
                return f"one-shot, {len(self.history)} earlier run(s): too few to know its spread"
            low, high = min(self.history), max(self.history)
            return (f"one-shot; {len(self.history)} earlier runs {format_measure(low, self.unit)} – "
                    f"{format_measure(high, self.unit)}")
        return f"{self.noise_pct:g} % noise floor"

    def text(self) -> str:
        pct = f" ({self.percent:+.1f} %)" if self.percent is not None else ""
        word = {True: "better", False: "worse", None: "within noise"}[self.better]
        return (f"{self.id}: {format_measure(self.before, self.unit)} -> {format_measure(self.after, self.unit)}"
                f"{pct} {word} ({self.noise})")


@dataclass
class RunDiff:
    before: str
    after: str
    status_changes: list[tuple[str, Status, Status]] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    new_warnings: list[CheckResult] = field(default_factory=list)
    only_before: list[str] = field(default_factory=list)
    only_after: list[str] = field(default_factory=list)
    verdicts: tuple[str, str] = ("", "")

    def lines(self, every: bool = False) -> list[str]:
        """What ``harness diff`` prints; ``every``: also the measurements within their noise."""
        out = [f"{self.before} -> {self.after}: verdict {self.verdicts[0]} -> {self.verdicts[1]}"]
        if self.status_changes:
            out.append("gates that changed status:")
            out += [f"  {cid}: {a.label} -> {b.label}" for cid, a, b in self.status_changes]
        changed = [d for d in self.deltas if every or d.better is not None]
        if changed:
            out.append("measurements:")
            out += [f"  {d.text()}" for d in changed]
        if not every and (quiet := len(self.deltas) - len(changed)):
            out.append(f"{quiet} measurement(s) within their noise (load percentiles whose 95 % intervals overlap, "
                       f"one-shot figures within the spread of earlier runs, others under {self.deltas[0].noise_pct:g} %),"
                       " not listed (--all lists them)")
        if self.new_warnings:
            out.append("new warnings:")
            out += [f"  {r.id}: {r.measured} ({r.detail[:120]})" for r in self.new_warnings]
        if self.only_after:
            out.append("new checks: " + ", ".join(self.only_after))
        if self.only_before:
            out.append("checks no longer recorded: " + ", ".join(self.only_before))
        if len(out) == 1:
            out.append("no change in any gate or measurement")
        return out


def earlier_values(path: Path, limit: int = HISTORY_RUNS) -> dict[str, list[float]]:
    """Every check's values in the latest ``limit`` finished runs comparable with ``path``'s run that
    started before it (in the same runs folder): the spread a one-shot figure is judged against."""
    this = summarize_run(path)
    earlier = [s for s in list_runs(Path(path).resolve().parent) if s.run_id != this.run_id
               and s.started_at < this.started_at and s.comparable_key == this.comparable_key
               and s.meta.get("finished_at")][-limit:]
    values: dict[str, list[float]] = {}
    for summary in earlier:
        for r in load_run(summary.run.path).results:
            if r.value is not None:
                values.setdefault(r.id, []).append(r.value)
    return values


def _one_shot(r: CheckResult) -> bool:
    """Measured once per run (a probe, a smoke request), not estimated from samples or a load aggregate."""
    return r.stage is not Stage.LOAD and r.unit in ("ms", "s")


def diff(before: Path, after: Path, noise_pct: float = NOISE_PCT) -> RunDiff:
    """What changed from run ``before`` to run ``after`` (see the module docstring)."""
    ra, rb = load_run(Path(before)), load_run(Path(after))
    a, b = {r.id: r for r in ra.results}, {r.id: r for r in rb.results}
    spread: dict[str, list[float]] | None = None
    out = RunDiff(ra.meta.get("run_id", Path(before).name), rb.meta.get("run_id", Path(after).name),
                  verdicts=(judge(ra).label, judge(rb).label))
    for cid, new in b.items():
        old = a.get(cid)
        if old is None:
            out.only_after.append(cid)
            continue
        if old.status is not new.status and (old.is_gate or new.is_gate):
            out.status_changes.append((cid, old.status, new.status))
        if new.status is Status.WARN and old.status is not Status.WARN:
            out.new_warnings.append(new)
        if old.value is not None and new.value is not None and old.unit == new.unit:
            delta = Delta(cid, new.title, new.unit, old.value, new.value, noise_pct)
            if old.interval is not None and new.interval is not None:
                delta.intervals = (old.interval, new.interval)
            elif _one_shot(new):
                spread = earlier_values(after) if spread is None else spread
                delta.history = spread.get(cid, [])
            out.deltas.append(delta)
    out.only_before = [cid for cid in a if cid not in b]
    return out


def resolve_run(name: str, runs_dir: Path | None = None) -> Path:
    """A run directory from a path or a run id under ``runs_dir``; ``last`` is the newest run."""
    root = Path(runs_dir or default_runs_dir())
    if name == "last":
        runs = list_runs(root)
        if not runs:
            raise FileNotFoundError(f"no runs under {root}")
        return runs[-1].run.path
    for candidate in (Path(name), root / name):
        if (candidate / "run.json").is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"{name!r} is neither a run directory nor a run id under {root}")

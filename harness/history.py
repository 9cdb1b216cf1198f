"""Runs over time: list the run directories, find a run's predecessor, diff two runs.

Everything is read from the run directories themselves (``run.json``, ``steps.json``,
``results/*.json``): no database. Runs are comparable when they ran the same sequence with the same
load profile on the same settings profile (cpu / gpu); ``previous_run`` picks the latest such run that
started before a given one. A diff matches checks by id: gates whose status changed, the change of
every typed measurement both runs have (with its direction: lower is better for times and failure
ratios, higher for throughput; a change smaller than ``NOISE_PCT`` is run-to-run noise and judged
neither), warnings that are new, checks only one run has.
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

    @property
    def change(self) -> float:
        return self.after - self.before

    @property
    def percent(self) -> float | None:
        return None if not self.before else 100 * self.change / abs(self.before)

    @property
    def better(self) -> bool | None:
        """True when the change is an improvement, False when a regression, None when unchanged."""
        if math.isclose(self.after, self.before, rel_tol=1e-9, abs_tol=1e-12):
            return None
        if self.percent is not None and abs(self.percent) < self.noise_pct:
            return None
        return (self.change < 0) == (self.unit in LOWER_IS_BETTER)

    def text(self) -> str:
        pct = f" ({self.percent:+.1f} %)" if self.percent is not None else ""
        word = {True: "better", False: "worse", None: "within noise"}[self.better]
        return (f"{self.id}: {format_measure(self.before, self.unit)} -> {format_measure(self.after, self.unit)}"
                f"{pct} {word}")


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

    def lines(self) -> list[str]:
        out = [f"{self.before} -> {self.after}: verdict {self.verdicts[0]} -> {self.verdicts[1]}"]
        if self.status_changes:
            out.append("gates that changed status:")
            out += [f"  {cid}: {a.label} -> {b.label}" for cid, a, b in self.status_changes]
        changed = [d for d in self.deltas if d.better is not None]
        if changed:
            out.append("measurements:")
            out += [f"  {d.text()}" for d in changed]
        if quiet := len(self.deltas) - len(changed):
            noise = self.deltas[0].noise_pct
            out.append(f"{quiet} measurement(s) moved less than {noise:g} % (run-to-run noise), not listed")
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


def diff(before: Path, after: Path, noise_pct: float = NOISE_PCT) -> RunDiff:
    """What changed from run ``before`` to run ``after`` (see the module docstring)."""
    ra, rb = load_run(Path(before)), load_run(Path(after))
    a, b = {r.id: r for r in ra.results}, {r.id: r for r in rb.results}
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
            out.deltas.append(Delta(cid, new.title, new.unit, old.value, new.value, noise_pct))
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

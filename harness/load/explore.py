"""The latency explorer's data: which run to look at, and its samples as ``LoadRun``s again.

A run qualifies when some scenario folder under its ``load/`` holds samples (``samples.jsonl``, or
only the per-process files of a run that was cut off) and not every sample failed: the load runbook
run by hand against no stack leaves hundreds of refused connections, and a chart of those is not
what "the newest load run" means. ``choose_run`` says which run it took and why, naming the newer
runs it passed over.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from harness.load import stats
from harness.load.runner import SCENARIO_FILE, LoadRun
from harness.load.samples import MERGED, Sample, merge_samples, read_samples, sample_files, split_warmup
from harness.load.scenarios import SCENARIOS, Scenario
from harness.rundir import default_runs_dir


class NoLoadSamples(RuntimeError):
    """Nothing to explore: no run, or no usable load samples in it."""


@dataclass
class Choice:
    run: Path
    reason: str
    passed_over: list[str] = field(default_factory=list)  # newer runs, each with why it was not taken

    def lines(self) -> list[str]:
        return [f"run: {self.run}", f"why: {self.reason}", *(f"  passed over {p}" for p in self.passed_over)]


def scenario_dirs(run: Path) -> list[Path]:
    """The scenario folders of a run that hold samples (merged, or only the per-process files)."""
    load = run / "load"
    if not load.is_dir():
        return []
    return sorted(d for d in load.iterdir() if d.is_dir() and ((d / MERGED).is_file() or sample_files(d)))


def read_folder(folder: Path) -> list[Sample]:
    merged = folder / MERGED
    return read_samples(merged) if merged.is_file() else merge_samples(sample_files(folder))


def newest_sample(run: Path) -> float:
    return max((f.stat().st_mtime for d in scenario_dirs(run) for f in [d / MERGED, *sample_files(d)]
                if f.is_file()), default=0.0)


def all_failed(run: Path) -> str:
    """Why every sample of ``run`` failed (``"all 57 samples failed: ConnectError …"``), or "" when
    at least one request succeeded."""
    samples = [s for d in scenario_dirs(run) for s in read_folder(d)]
    if any(s.ok for s in samples):
        return ""
    common = Counter((s.error or "no error text")[:80] for s in samples).most_common(1)
    return f"all {len(samples)} samples failed" + (f" (mostly: {common[0][0]})" if common else "")


def choose_run(run_dir: str = "", runs_root: str | Path = "") -> Choice:
    """The run named by ``run_dir`` (a folder, a run id under the runs folder, or its ``load/``), else
    the newest run whose samples are not all failures."""
    root = Path(runs_root).expanduser() if runs_root else default_runs_dir()
    if run_dir:
        given = Path(run_dir).expanduser()
        run = next((p for p in (given, root / run_dir) if p.is_dir()), None)
        if run is None:
            raise NoLoadSamples(f"run_dir {run_dir!r} is neither a folder nor a run id under {root}")
        run = run.resolve()
        if run.name == "load" and not (run / "load").is_dir():
            run = run.parent  # the run's load/ folder itself was given
        if not scenario_dirs(run):
            raise NoLoadSamples(f"{run} has no load samples (expected load/<scenario>/{MERGED}); "
                                "the load runbook (05_load) writes them")
        failed = all_failed(run)
        return Choice(run, "named by run_dir" + (f"; note: {failed}" if failed else ""))
    candidates = [p for p in root.iterdir() if p.is_dir() and scenario_dirs(p)] if root.is_dir() else []
    if not candidates:
        raise NoLoadSamples(f"no run under {root} has load samples (load/<scenario>/{MERGED}). Run the load "
                            "runbook first (`harness run`, or `bash scripts/run.sh`), or set run_dir.")
    passed_over = []
    for run in sorted(candidates, key=newest_sample, reverse=True):
        failed = all_failed(run)
        if not failed:
            newer = f"; {len(passed_over)} newer run(s) passed over" if passed_over else ""
            return Choice(run.resolve(), f"the newest run under {root} whose load samples are not all "
                                         f"failures{newer}", passed_over)
        passed_over.append(f"{run.name}: {failed}")
    raise NoLoadSamples(f"every run under {root} with load samples has only failed requests ("
                        + "; ".join(passed_over) + "): was the stack up? Set run_dir to look at one anyway.")


def peak_in_flight(samples: list[Sample]) -> int:
    edges = sorted([(s.start, 1) for s in samples] + [(s.end, -1) for s in samples], key=lambda e: (e[0], e[1]))
    peak = level = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def scenario_of(name: str, folder: Path, samples: list[Sample]) -> Scenario:
    """The scenario as the load runbook ran it (its scenario.json); for a folder without one, the
    table's row of that name (or a bare one) with users = the peak of requests in flight, no targets."""
    as_run = folder / SCENARIO_FILE
    if as_run.is_file():
        data = json.loads(as_run.read_text())
        return Scenario(**{f.name: data[f.name] for f in fields(Scenario) if f.name in data})
    base = SCENARIOS.get(name) or Scenario(name, "", "", 0, users=0, spawn_rate=0)
    return replace(base, users=peak_in_flight(samples), thresholds="")


def load_runs(run: Path, scenario: str = "", include_warmup: bool = False) -> list[LoadRun]:
    """The scenarios of ``run`` (comma-separated names, or all) as ``LoadRun``s, so the load runbook's
    own table and charts draw them."""
    available = {d.name: d for d in scenario_dirs(run)}
    wanted = [s.strip() for s in scenario.split(",") if s.strip()] or list(available)
    missing = [s for s in wanted if s not in available]
    if missing:
        raise NoLoadSamples(f"no samples for scenario(s) {', '.join(missing)} in {run}; "
                            f"available: {', '.join(available) or 'none'}")
    runs = []
    for name in wanted:
        folder = available[name]
        everything = read_folder(folder)
        measured, warm = (everything, []) if include_warmup else split_warmup(everything)
        runs.append(LoadRun(scenario_of(name, folder, everything), "", folder,
                            processes=len(sample_files(folder)) or 1, warmup_s=0.0, exit_code=0, started_at="",
                            duration_s=stats.window_s(everything), samples=measured, warmup_samples=warm))
    return runs


def describe(run: LoadRun, include_warmup: bool = False) -> str:
    """``chat: 40 measured, 3 warm-up, 0 failed, 1.2 req/s over 33.0 s; 3 users; rows: …``"""
    measured = run.samples
    failed = sum(not s.ok for s in measured)
    window = stats.window_s(measured)
    rate = f", {len(measured) / window:.2f} req/s over {window:.1f} s" if window > 0 else ""
    counted = (f"{len(measured)} samples (warm-up included)" if include_warmup
               else f"{len(measured)} measured, {len(run.warmup_samples)} warm-up")
    rows = ", ".join(dict.fromkeys(s.name for s in measured + run.warmup_samples))
    return f"{run.scenario.name}: {counted}, {failed} failed{rate}; {run.scenario.users} users; rows: {rows}"

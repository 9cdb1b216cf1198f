"""Turn a ``LoadRun`` into ``CheckResult`` records (stage ``load``): one per threshold, plus the run itself."""

from __future__ import annotations

from pathlib import Path

from harness.load import stats
from harness.load.runner import LoadRun
from harness.load.scenarios import Scenario
from harness.load.thresholds import Threshold
from harness.result import CheckResult, Stage, Status

PERCENTILE_NOTE = "nearest-rank percentile over the raw samples"


def rel_path(path: Path, base: Path | None) -> str:
    """``path`` relative to the run directory ``base`` when it lies inside it (evidence links)."""
    if base is None:
        return str(path)
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def _warmup_note(run: LoadRun) -> str:
    if not run.warmup_s:
        return "no warm-up"
    return f"warm-up {run.warmup_s:g} s: {len(run.warmup_samples)} sample(s) excluded"


def threshold_id(scenario: str, th: Threshold) -> str:
    row = f"[{th.row}]" if th.row else ""
    return f"load.{scenario}.{th.metric}{row}"


def judge(run: LoadRun, thresholds: list[Threshold], base: Path | None = None,
          figures: list[Threshold] | None = None) -> list[CheckResult]:
    """The run's own record, then one result per threshold (target vs measured, from raw samples),
    then one ``info`` result per figure that is shown but not judged (TTFT, ITL beside a gate)."""
    evidence = [rel_path(p, base) for p in (run.html_file, run.samples_file) if p.exists()]
    out = [run_record(run, evidence)]
    timing = {"started_at": run.started_at, "duration_s": 0.0}
    judged = {threshold_id(run.scenario.name, th) for th in thresholds}
    shown = [f for f in figures or [] if threshold_id(run.scenario.name, f) not in judged]
    for th in [*thresholds, *shown]:
        value = stats.measure(run.samples, th)
        n = len(stats.select(run.samples, th.row))
        parts = [f"{n} measured sample(s){' of row ' + repr(th.row) if th.row else ''}", _warmup_note(run)]
        if th.is_percentile:
            parts.append(PERCENTILE_NOTE)
            locust = _locust_value(run, th)
            if locust is not None:
                parts.append(f"Locust's rounded {th.stat}: {locust:g} ms (not judged)")
        if run.aborted:
            parts.append(run.aborted)
        if not th.is_gate:
            status = Status.INFO
        elif value is None:
            status = Status.FAIL
        else:
            status = Status.PASS if th.passes(value) else Status.FAIL
        out.append(CheckResult(
            id=threshold_id(run.scenario.name, th), title=f"{run.scenario.name}: {th}", stage=Stage.LOAD,
            status=status, target=str(th) if th.is_gate else "shown, not a gate", value=value, unit=th.unit,
            measured=th.format_value(value) if value is not None else "no samples", evidence=evidence,
            detail="; ".join(parts), **timing))
    return out


def run_record(run: LoadRun, evidence: list[str]) -> CheckResult:
    """Did the scenario run at all: Locust's exit, requests made, generator saturation."""
    sc = run.scenario
    n, failed = len(run.samples), sum(not s.ok for s in run.samples)
    window = stats.window_s(run.samples)
    rps = n / window if window > 0 else None
    rate = f", {rps:.2f} req/s" if rps is not None else ""
    detail = [f"{sc.users} user(s), spawn {sc.spawn_rate:g}/s, stop after {sc.stop_condition()}, "
              f"{run.processes} process(es), host {run.host}", _warmup_note(run)]
    status = Status.PASS
    if run.exit_code != 0:
        status = Status.FAIL
        detail.append(f"locust exited {run.exit_code}: {run.log_tail(8)}")
    elif n == 0:
        status = Status.FAIL
        detail.append("no request was measured: " + (run.log_tail(8) or "locust wrote no log"))
    if run.generator_saturated:
        status = Status.WARN if status is Status.PASS else status
        detail.append("the load generator reported CPU above 90 %: latencies may be the generator's")
    if run.aborted:
        detail.append(run.aborted)
    return CheckResult(id=f"load.{sc.name}.run", title=f"{sc.name}: {sc.description or sc.locustfile}",
                       stage=Stage.LOAD, status=status, target=f"{sc.stop_condition()} at {sc.users} users",
                       value=rps, unit="req/s", measured=f"{n} requests, {failed} failed{rate}", evidence=evidence,
                       detail="; ".join(detail), started_at=run.started_at, duration_s=run.duration_s)


def skipped(scenario: Scenario, reason: str) -> CheckResult:
    return CheckResult(id=f"load.{scenario.name}.run", title=f"{scenario.name}: {scenario.description}",
                       stage=Stage.LOAD, status=Status.SKIP, target=scenario.thresholds, detail=reason)


def _locust_value(run: LoadRun, th: Threshold) -> float | None:
    if th.metric.startswith(("ttft_", "itl_", "tps_")):
        return None
    row = th.row or ("Aggregated" if len({s.name for s in run.samples}) > 1 else next(
        (s.name for s in run.samples), "Aggregated"))
    return run.locust_percentiles.get(row, {}).get(th.stat)

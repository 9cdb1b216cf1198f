"""Turn a ``LoadRun`` into ``CheckResult`` records (stage ``load``): the run itself, one per threshold,
the box it ran on.

- ``load.<scenario>.run``: did the scenario do what it states — "72 of 72 completed (20 stated,
  extended ...)", or "14 of 20 completed" and FAIL when the time cap (or anything else) ended it
  before its count, when no request succeeded, or when Locust failed.
- ``load.<scenario>.<metric>``: each threshold judged by ``harness.load.gates`` (percentiles with
  their 95 % interval; INDETERMINATE with how many more requests would decide it), with its headroom
  (``harness.result.with_headroom``: a PASS with less than 20 % of its target left is a WARN).
- ``load.<scenario>.box``: CPU steal, CPU outside the stack and the harness, the CPU benchmark before
  it (``harness.envcheck.contention``). While the box was contended no gate of the scenario can PASS:
  a gate that would pass is INDETERMINATE, one that fails stays FAIL, both saying what contended it.
- A gate measured with other scenarios beside it (``-p overlap=true``) says so in its caveat.
"""

from __future__ import annotations

from pathlib import Path

from harness.envcheck.contention import CpuReading
from harness.load import gates, stats
from harness.load.runner import LoadRun
from harness.load.scenarios import Scenario
from harness.load.thresholds import Threshold
from harness.result import CheckResult, Stage, Status, with_headroom

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
          figures: list[Threshold] | None = None, box: CpuReading | None = None,
          beside: list[str] | None = None) -> list[CheckResult]:
    """The run's own record, then one result per threshold (target vs measured, from raw samples),
    then one ``info`` result per figure that is shown but not judged (TTFT, ITL beside a gate), then
    the box's record when ``box`` was read (module docstring). ``beside``: scenarios that ran at the
    same time."""
    evidence = [rel_path(p, base) for p in (run.html_file, run.samples_file) if p.exists()]
    out = [run_record(run, evidence, beside)]
    judged = {threshold_id(run.scenario.name, th) for th in thresholds}
    shown = [f for f in figures or [] if threshold_id(run.scenario.name, f) not in judged]
    # each gate names the busiest outside process; the box row beside them names the rest
    contended = box.reasons(names=1) if box is not None else []
    if contended:
        contended[-1] += f" (load.{run.scenario.name}.box has the readings)"
    for th in [*thresholds, *shown]:
        out.append(_gate(run, th, evidence, contended, beside or []))
    if box is not None:
        out.append(box_record(run.scenario, box, run.started_at))
    return out


def _gate(run: LoadRun, th: Threshold, evidence: list[str], contended: list[str], beside: list[str]) -> CheckResult:
    judged = gates.evaluate(run.evidence(), th)
    status, caveats = judged.status, []
    n = len(stats.select(run.samples, th.row))
    parts = [judged.note] if judged.note else []
    parts += [f"{n} measured sample(s){' of row ' + repr(th.row) if th.row else ''}", _warmup_note(run)]
    if th.is_percentile:
        parts.append(PERCENTILE_NOTE)
        locust = _locust_value(run, th)
        if locust is not None:
            parts.append(f"Locust's rounded {th.stat}: {locust:g} ms (not judged)")
    if run.aborted or run.capped:
        parts.append(run.aborted or run.capped)
    if th.is_gate and contended:
        if status is Status.PASS:
            status = Status.INDETERMINATE
            caveats.append("measured while the box was contended (" + "; ".join(contended)
                           + "): it cannot pass there; rerun on a quiet box")
        else:
            caveats.append("measured while the box was contended: " + "; ".join(contended))
    if judged.status is Status.INDETERMINATE and th.is_gate:
        caveats.append(_to_decide(judged, run, th))
    if beside and th.is_gate:
        caveats.append(f"measured under extra load: {', '.join(beside)} ran beside it")
    measured = "no samples" if judged.value is None else ("≥ " if judged.at_least else "") + th.format_value(judged.value)
    result = CheckResult(
        id=threshold_id(run.scenario.name, th), title=f"{run.scenario.name}: {th}", stage=Stage.LOAD,
        status=status, target=str(th) if th.is_gate else "shown, not a gate", value=judged.value, unit=th.unit,
        measured=measured, evidence=evidence, detail="; ".join(parts), started_at=run.started_at,
        interval=list(judged.interval) if judged.interval is not None else None, caveat="; ".join(caveats))
    return with_headroom(result)


def _to_decide(judged: gates.Judgement, run: LoadRun, th: Threshold) -> str:
    """``about 52 more requests would decide it (72 in all; the budget was 100)``, or what leaves it open."""
    if not th.decided_by_more:
        return f"{run.planned - run.completed} request(s) not run leave it open" if run.incomplete else "undecided"
    budget = max(run.scenario.budget, run.scenario.requests)
    if judged.to_decide is None:
        return "no count of requests would decide it: the percentile sits at its target"
    more = max(1, judged.to_decide - judged.in_hand)
    return (f"about {more} more request(s) would decide it ({judged.to_decide} in all"
            + (f"; the scenario's budget is {budget}" if budget else "") + ")")


def box_record(scenario: Scenario, box: CpuReading, started_at: str) -> CheckResult:
    """``load.<scenario>.box``: what else the box did while the scenario ran (info; a warning when contended)."""
    reasons = box.reasons()
    bench = box.benchmark
    measured = f"outside {box.outside_pct:.0f} %, steal {box.steal_pct:.1f} %" + (
        f", benchmark {bench.available_pct:.0f} %" if bench and bench.available_pct is not None else "")
    return CheckResult(
        f"load.{scenario.name}.box", f"{scenario.name}: the box while it ran", Stage.LOAD,
        Status.WARN if reasons else Status.INFO, target=f"outside the stack < {box.outside_limit_pct:g} % of the CPU",
        value=round(box.outside_pct, 1), unit="%", measured=measured,
        detail=("box contended: " + "; ".join(reasons) + ". " if reasons else "") + box.describe(),
        caveat="; ".join(reasons), started_at=started_at)


def run_record(run: LoadRun, evidence: list[str], beside: list[str] | None = None) -> CheckResult:
    """Did the scenario do what it states: Locust's exit, requests completed of the count, any success,
    generator saturation."""
    sc = run.scenario
    n, failed = len(run.samples), sum(not s.ok for s in run.samples)
    window = stats.window_s(run.samples)
    rps = n / window if window > 0 else None
    rate = f", {rps:.2f} req/s" if rps is not None else ""
    detail = [sc.load_model(), (f"spawn {sc.spawn_rate:g}/s, " if not sc.open_model else "")
              + f"stop after {sc.stop_condition()}, {run.processes} process(es), host {run.host}", _warmup_note(run)]
    if sc.open_model:
        detail.append(queue_note(run.samples))
    if run.count_bounded:
        measured = f"{run.completed} of {run.planned} completed, {failed} failed{rate}"
        if run.planned > sc.requests:
            detail.append(f"{sc.requests} stated, extended to {run.planned} to decide its gates: "
                          + "; ".join(run.extensions))
        elif run.extensions:
            detail.append("; ".join(run.extensions))
    else:
        measured = f"{n} requests, {failed} failed{rate}"
    censored = sum(s.censored for s in run.samples)
    if censored:
        detail.append(f"{censored} request(s) cut off while running (failed, timed from below)")
    status = Status.PASS
    if run.exit_code != 0:
        status = Status.FAIL
        detail.append(f"locust exited {run.exit_code}: {run.log_tail(8)}")
    elif n == 0:
        status = Status.FAIL
        detail.append("no request was measured: " + (run.log_tail(8) or "locust wrote no log"))
    elif run.incomplete:
        status = Status.FAIL
        missing = run.planned - run.completed
        detail.append(f"{missing} of {run.planned} requests not completed: "
                      + (run.aborted or run.capped or "the run ended early")
                      + ("" if run.aborted else "; they count as failed"))
    elif failed == n:
        status = Status.FAIL
        detail.append(f"no request succeeded: mostly {gates.dominant_error(run.samples)}")
    if run.generator_saturated:
        status = Status.WARN if status is Status.PASS else status
        detail.append("the load generator reported CPU above 90 %: latencies may be the generator's")
    if run.aborted and not run.incomplete:
        detail.append(run.aborted)
    if beside:
        detail.append(f"ran beside {', '.join(beside)}")
    return CheckResult(id=f"load.{sc.name}.run", title=f"{sc.name}: {sc.description or sc.locustfile}",
                       stage=Stage.LOAD, status=status, target=f"{sc.stop_condition()} {sc.pace()}",
                       value=rps, unit="req/s", measured=measured, evidence=evidence,
                       detail="; ".join(detail), started_at=run.started_at, duration_s=run.duration_s)


def queue_note(samples: list) -> str:
    """Open model: how long requests waited to be sent and how many were ahead of them on arrival."""
    lags = [s.lag_ms for s in samples if s.lag_ms is not None]
    queue = [s.in_flight for s in samples if s.in_flight is not None]
    if not lags:
        return "no request carries its schedule"
    return (f"sent late by p50 {stats.percentile(lags, 50):.0f} ms / p95 {stats.percentile(lags, 95):.0f} ms / "
            f"max {max(lags):.0f} ms after their scheduled start (counted in their latency); "
            f"up to {max(queue) if queue else 0} earlier request(s) unfinished on arrival")


def skipped(scenario: Scenario, reason: str) -> CheckResult:
    return CheckResult.skipped(f"load.{scenario.name}.run", f"{scenario.name}: {scenario.description}",
                               Stage.LOAD, target=scenario.thresholds, measured="", detail=reason)


def _locust_value(run: LoadRun, th: Threshold) -> float | None:
    if th.metric.startswith(("ttft_", "itl_", "tps_")):
        return None
    row = th.row or ("Aggregated" if len({s.name for s in run.samples}) > 1 else next(
        (s.name for s in run.samples), "Aggregated"))
    return run.locust_percentiles.get(row, {}).get(th.stat)

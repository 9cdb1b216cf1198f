"""A drill's verdict: recovery time, the rest of the phase, the recorded exit, client errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from harness.faults.records import Drill, Thresholds, dependants
from harness.result import CheckResult, Stage
from suite.fsio import write_atomic

INFERENCE = ("inference-chat", "inference-code")  # the gateway's failover covers their outage


def judge(drill: Drill, before: dict, after: dict, th: Thresholds, evidence_dir: Path, figure: Path) -> CheckResult:
    """One result per killed service; ``before`` / ``after`` are its ``suite status`` rows from before
    the first kill and after the last (each service is killed once, so one more restart)."""
    name = drill.service
    inference = name in INFERENCE
    budget = th.recovery_for(name)
    target = f"ready again ≤ {budget:g} s, dependants ready without a restart, exit recorded"
    if inference:
        target += f", client errors ≤ {th.inference_error_ratio:.0%} (gateway failover)"
    problems, evidence = [], [str(figure)]
    restarts = (before.get("restarts", 0), after.get("restarts", 0))
    last_exit = after.get("last_exit", "")
    if drill.recovery_s is None:
        problems.append(f"not ready again within {th.give_up_s:g} s; the drill stopped here")
        path = Path(evidence_dir) / f"{name}.log.txt"
        write_atomic(path, drill.log_tail + "\n")
        evidence.append(str(path))
        measured = "not restored"
    else:
        measured = f"ready again in {drill.recovery_s:.1f} s"
        if drill.recovery_s > budget:
            problems.append(f"recovery took {drill.recovery_s:.1f} s")
        if drill.new_pid in (None, drill.pid):
            problems.append("no new process serves it")
        if restarts[1] != restarts[0] + 1 or "SIGKILL" not in last_exit:
            problems.append(f"suite status shows restarts {restarts[0]} → {restarts[1]}, last exit {last_exit!r}")
        if drill.not_ready:
            problems.append("not ready again: " + ", ".join(drill.not_ready))
        if drill.restarted:
            problems.append("dependants restarted too: " + ", ".join(drill.restarted))
    n = len(drill.samples)
    measured += (f"; {len(drill.failed)}/{n} affected requests failed ({drill.error_ratio:.0%})" if n
                 else "; no request needed it meanwhile")
    if drill.served_by_fallback:
        measured += f", {drill.served_by_fallback} served by the other model"
    if inference and n and drill.error_ratio > th.inference_error_ratio:
        problems.append(f"client error ratio {drill.error_ratio:.1%} > {th.inference_error_ratio:.0%}")
    notes = [f"pid {drill.pid} → {drill.new_pid or '-'}", last_exit, f"restarts {restarts[0]} → {restarts[1]}"]
    deps = dependants(name, drill.phase)
    if deps and drill.ready_at is not None and not drill.restarted:
        notes.append(f"dependants ready again without a restart: {', '.join(deps)}")
    if drill.samples:
        notes.append(f"slowest affected request {max(s.ms for s in drill.samples) / 1000:.1f} s")
    if drill.failed:
        notes.append("errors: " + "; ".join(sorted({(s.error or "")[:80] for s in drill.failed}))[:300])
    return CheckResult(f"fault.{name}", f"kill -9 {name} under load", Stage.FAULT_DRILL,
                       "fail" if problems else "pass", target=target, measured=measured, evidence=evidence,
                       value=None if drill.recovery_s is None else round(drill.recovery_s, 2), unit="s",
                       detail="; ".join(x for x in [*problems, *notes] if x),
                       started_at=datetime.fromtimestamp(drill.killed_at, UTC).isoformat(timespec="seconds"),
                       duration_s=round(drill.recovery_s or th.give_up_s, 2))

"""Fault drill: ``kill -9`` each service of a phase while a light load runs, and judge the recovery.

For every drilled service: its pid comes from ``suite status --json``; it is killed with SIGKILL;
the time until its ``/ready`` passes again is the recovery time; then every service of the phase
must be ready again, its dependants without having been restarted (a restarted dependency makes
them ready on its own), and ``suite status`` must show the exit and one more restart. The load
(Locust in a subprocess, ``load/fault_drill.py``, through the gateway, RAG and tools) runs the whole
time; the requests that needed the killed service and overlapped its outage give the client error
ratio, and those the gateway answered from the other model show whether failover served them.
A service that is not ready again within ``give_up_s`` ends the drill: its result fails with the
log tail as evidence and no further service is killed.

Nothing here imports locust or a service's code; the suite is reached through its CLI and HTTP.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from harness import stack
from harness.load import runner
from harness.load import samples as samples_mod
from harness.load.samples import Sample
from harness.load.scenarios import Scenario
from harness.result import CheckResult, Stage
from suite import services
from suite.settings import Settings

log = logging.getLogger(__name__)

INFERENCE = ("inference-chat", "inference-code")
FALLBACK = " (fallback)"
# The services each request of the drill's load needs on its normal path (load/fault_drill.py names).
ROUTES: dict[str, tuple[str, ...]] = {
    "chat": ("gateway", "inference-chat"),
    "code": ("gateway", "inference-code"),
    "embeddings": ("gateway", "embedding"),
    "rag query": ("rag", "embedding", "gateway", "inference-chat"),
    "tools read_file": ("tools",),
    "tools memory_search": ("tools", "memory"),
}


@dataclass(frozen=True)
class Thresholds:
    recovery_s: float = 30.0  # ready again within (the CPU default)
    inference_error_ratio: float = 0.05  # failed share of affected requests while an inference service is down
    give_up_s: float = 90.0  # not ready by then: the drill stops (NO-GO)


@dataclass
class Drill:
    """One kill and what followed."""

    service: str
    phase: int
    pid: int
    killed_at: float  # epoch seconds
    ready_at: float | None = None
    new_pid: int | None = None
    restarts: tuple[int, int] = (0, 0)  # before, after
    last_exit: str = ""
    not_ready: list[str] = field(default_factory=list)  # services of the phase not ready again
    restarted: list[str] = field(default_factory=list)  # dependants that were restarted too
    samples: list[Sample] = field(default_factory=list)  # requests that needed it during the outage
    around: list[Sample] = field(default_factory=list)  # every request of the timeline window
    settle_s: float = 0.0
    log_tail: str = ""

    @property
    def recovery_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.killed_at

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def error_ratio(self) -> float:
        return len(self.failed) / len(self.samples) if self.samples else 0.0

    @property
    def served_by_fallback(self) -> int:
        return sum(1 for s in self.samples if s.ok and s.name.endswith(FALLBACK))


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def route_of(name: str) -> str:
    return name.removesuffix(FALLBACK)


def affected(samples: list[Sample], service: str, start: float, end: float) -> list[Sample]:
    """Requests whose normal path needs ``service`` and that were in flight during [start, end]."""
    return [s for s in samples if service in ROUTES.get(route_of(s.name), ())
            and s.start < end and s.end > start]


def dependants(service: str, phase: int) -> list[str]:
    """Services of the phase that need ``service``, directly or through another."""
    found: list[str] = []
    for spec in services.for_phase(phase):  # table order is dependency order
        if service in spec.depends_on or any(d in found for d in spec.depends_on):
            found.append(spec.name)
    return found


def suite_status(settings: Settings) -> dict[str, dict]:
    """``suite status --json --all`` by service name."""
    return {s["name"]: s for s in stack.status(settings)}


def wait_ready(settings: Settings, name: str, deadline: float, every_s: float = 0.25) -> float | None:
    """Epoch time at which ``name``'s /ready first passed, or None by ``deadline`` (monotonic)."""
    url = settings.url(name) + services.get(name).ready_path
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=5.0).status_code == 200:
                return time.time()
        except httpx.HTTPError:
            pass
        time.sleep(every_s)
    return None


def log_tail(settings: Settings, name: str, lines: int = 40) -> str:
    proc = stack.run_suite(["logs", name, "-n", str(lines)], settings, timeout=60)
    return proc.stdout.strip() or proc.stderr.strip()


class BackgroundLoad:
    """The drill's Locust run in a thread (``harness.load.runner``), ended through its stop file."""

    def __init__(self, settings: Settings, phase: int, out_dir: Path, users: int, pace_s: float,
                 max_s: float) -> None:
        self.out_dir = Path(out_dir)
        scenario = Scenario("fault-drill", "fault_drill.py", "gateway", 1, users=users, spawn_rate=users,
                            duration_s=max_s, max_tokens=8, description="light load while services are killed")
        env = {"LOAD_PACE_S": str(pace_s), "LOAD_RAG_COLLECTION": "fault-drill",
               **prepare(settings, phase)}
        self.run: runner.LoadRun | None = None
        self.error: BaseException | None = None

        def go() -> None:
            try:
                self.run = runner.run_scenario(scenario, settings.url("gateway"), self.out_dir, phase=phase,
                                               extra_env=env)
            except BaseException as exc:  # reported by stop()
                self.error = exc

        self.thread = threading.Thread(target=go, name="fault-drill-load", daemon=True)

    def start(self, within_s: float = 30.0) -> None:
        """Start Locust and wait until its users are running (not for answers: on a busy box the
        first ones take a while, and the load only has to be there when the first kill comes)."""
        self.thread.start()
        log_file = self.out_dir / "locust.log"
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and self.thread.is_alive():
            if "All users spawned" in (log_file.read_text(errors="replace") if log_file.exists() else ""):
                return
            time.sleep(0.2)

    def samples(self) -> list[Sample]:
        """Every request so far (Locust appends one line per request as it goes)."""
        return samples_mod.merge_samples(samples_mod.sample_files(self.out_dir))

    def stop(self) -> runner.LoadRun | None:
        (self.out_dir / "stop").write_text("fault drill finished")
        self.thread.join(timeout=120)
        if self.error is not None:
            raise self.error
        return self.run


def prepare(settings: Settings, phase: int) -> dict[str, str]:
    """What the load needs first: the run's key (``LOAD_API_KEY``), a RAG document (phase 2), a file to
    read (phase 3)."""
    from harness.keys import run_keys

    key = run_keys(settings).developer
    env: dict[str, str] = {"LOAD_API_KEY": key}
    if phase >= 2:
        httpx.post(settings.url("rag") + "/index", timeout=120, headers={"Authorization": f"Bearer {key}"}, json={
            "collection": "fault-drill", "documents": [{"id": "drill", "text": "Backups are kept for seven days."}],
        }).raise_for_status()
    if phase >= 3:
        from harness.load.plan import tools_env

        env.update(tools_env(settings))
    return env


def drill_one(settings: Settings, phase: int, name: str, load: BackgroundLoad, before: dict[str, dict],
              th: Thresholds, settle_s: float) -> tuple[Drill, dict[str, dict]]:
    """Kill ``name`` and follow it until the phase is ready again; returns the drill and the new status."""
    time.sleep(settle_s)  # load before the kill, for the timeline
    pid = before[name]["pid"]
    drill = Drill(name, phase, pid, time.time(), settle_s=settle_s)
    os.kill(pid, signal.SIGKILL)
    log.info("fault drill: killed %s (pid %d)", name, pid)
    deadline = time.monotonic() + th.give_up_s
    drill.ready_at = wait_ready(settings, name, deadline)
    after = before
    if drill.ready_at is None:
        drill.log_tail = log_tail(settings, name)
    else:
        drill.not_ready = [s.name for s in services.for_phase(phase)
                           if s.name != name and wait_ready(settings, s.name, deadline) is None]
        time.sleep(settle_s)  # load after the recovery, for the timeline
        after = suite_status(settings)
        drill.new_pid, drill.last_exit = after[name]["pid"], after[name]["last_exit"]
        drill.restarts = (before[name]["restarts"], after[name]["restarts"])
        drill.restarted = [d for d in dependants(name, phase) if after[d]["pid"] != before[d]["pid"]]
    end = drill.ready_at or time.time()
    everything = load.samples()
    drill.samples = affected(everything, name, drill.killed_at, end)
    drill.around = [s for s in everything if s.start < end + settle_s and s.end > drill.killed_at - settle_s]
    return drill, after


def judge(drill: Drill, th: Thresholds, evidence_dir: Path, figure: Path) -> CheckResult:
    """One result per drilled service: recovery, dependants, the recorded exit, client errors."""
    name = drill.service
    inference = name in INFERENCE
    target = f"ready again ≤ {th.recovery_s:g} s, dependants ready without a restart, exit recorded"
    if inference:
        target += f", client errors ≤ {th.inference_error_ratio:.0%} (gateway failover)"
    problems, evidence = [], [str(figure)]
    if drill.recovery_s is None:
        problems.append(f"not ready again within {th.give_up_s:g} s; the drill stopped here")
        path = Path(evidence_dir) / f"{name}.log.txt"
        path.write_text(drill.log_tail + "\n")
        evidence.append(str(path))
        measured = "not restored"
    else:
        measured = f"ready again in {drill.recovery_s:.1f} s"
        if drill.recovery_s > th.recovery_s:
            problems.append(f"recovery took {drill.recovery_s:.1f} s")
        if drill.new_pid == drill.pid:
            problems.append("the same process still answers")
        if drill.restarts[1] != drill.restarts[0] + 1 or "SIGKILL" not in drill.last_exit:
            problems.append(f"suite status shows restarts {drill.restarts[0]} → {drill.restarts[1]}, "
                            f"last exit {drill.last_exit!r}")
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
    notes = [f"pid {drill.pid} → {drill.new_pid or '-'}", drill.last_exit]
    deps = dependants(name, drill.phase)
    if deps and drill.ready_at is not None and not drill.restarted:
        notes.append(f"dependants ready again without a restart: {', '.join(deps)}")
    if drill.samples:
        notes.append(f"slowest affected request {max(s.ms for s in drill.samples) / 1000:.1f} s")
    if drill.failed:
        notes.append("errors: " + "; ".join(sorted({(s.error or "")[:80] for s in drill.failed}))[:300])
    return CheckResult(f"fault.{name}", f"kill -9 {name} under load", Stage.FAULT_DRILL,
                       "fail" if problems else "pass", target=target, measured=measured, evidence=evidence,
                       detail="; ".join(x for x in [*problems, *notes] if x), started_at=_iso(drill.killed_at),
                       duration_s=round(drill.recovery_s or th.give_up_s, 2))


def timeline_chart(drills: list[Drill], path: Path):
    """One panel per killed service: each request of the window as a point (x: seconds from the
    kill, y: its duration), the outage shaded up to the moment the service was ready again."""
    import matplotlib

    if "inline" not in matplotlib.get_backend().lower():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(max(1, len(drills)), 1, figsize=(8, 1.9 * max(1, len(drills)) + 0.4), squeeze=False)
    styles = {"other requests": ("#afb8c1", "."), "needed it, ok": ("#0969da", "o"),
              "served by the other model": ("#1a7f37", "^"), "failed": ("#cf222e", "x")}
    for ax, d in zip(axes[:, 0], drills):
        needed = {id(s) for s in d.samples}
        kinds = [_kind(s, id(s) in needed) for s in d.around]
        for label, (color, marker) in styles.items():
            pts = [s for s, k in zip(d.around, kinds) if k == label]
            if pts:
                ax.scatter([s.start - d.killed_at for s in pts], [s.ms / 1000 for s in pts], s=16, c=color,
                           marker=marker, label=label)
        end = d.recovery_s if d.recovery_s is not None else max((s.end for s in d.around), default=d.killed_at) - d.killed_at
        ax.axvspan(0, end, color="#cf222e", alpha=0.08)
        ax.axvline(0, color="#cf222e", lw=1)
        ax.text(0, 1.0, " kill -9", transform=ax.get_xaxis_transform(), va="top", fontsize=7, color="#cf222e")
        if d.recovery_s is not None:
            ax.axvline(d.recovery_s, color="#1a7f37", lw=1, ls="--")
            ax.text(d.recovery_s, 1.0, f" ready {d.recovery_s:.1f} s", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=7, color="#1a7f37")
        title = f"{d.service}: " + (f"ready again in {d.recovery_s:.1f} s" if d.recovery_s is not None
                                    else "NOT restored")
        ax.set_title(f"{title}; {len(d.failed)}/{len(d.samples)} affected requests failed", fontsize=9)
        ax.set_ylabel("s", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6, loc="upper right")
    axes[-1, 0].set_xlabel("seconds from the kill", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="svg")
    return fig


def _kind(sample: Sample, needed: bool) -> str:
    if not sample.ok:
        return "failed"
    if not needed:
        return "other requests"
    return "served by the other model" if sample.name.endswith(FALLBACK) else "needed it, ok"


@dataclass
class Outcome:
    drill: Drill
    result: CheckResult


def run_drills(settings: Settings, phase: int, run_dir: Path, names: list[str] | None = None,
               th: Thresholds | None = None, users: int = 3, pace_s: float = 1.0, settle_s: float = 1.5,
               figure: Path | None = None) -> Iterator[Outcome]:
    """Drill each service of the phase (or ``names``) in turn under one background load; yield a
    result after each. Stops after a service that does not come back."""
    th = th or Thresholds()
    phase_names = [s.name for s in services.for_phase(phase)]
    names = names or phase_names
    unknown = [n for n in names if n not in phase_names]
    if unknown:
        raise ValueError(f"not services of phase {phase}: {', '.join(unknown)} (phase {phase}: "
                         f"{', '.join(phase_names)})")
    run_dir = Path(run_dir)
    evidence_dir = run_dir / "faults"
    evidence_dir.mkdir(parents=True, exist_ok=True)
    figure = figure or run_dir / "figures" / "fault_drill_timeline.svg"
    status = suite_status(settings)
    down = [n for n in phase_names if not status.get(n, {}).get("ready")]
    if down:
        raise RuntimeError(f"the fault drill needs every service of phase {phase} ready; not ready: {', '.join(down)}")
    load = BackgroundLoad(settings, phase, run_dir / "load" / "fault-drill", users, pace_s,
                          max_s=len(names) * (th.give_up_s + 30) + 60)
    load.start()
    try:
        for name in names:
            drill, status = drill_one(settings, phase, name, load, status, th, settle_s)
            yield Outcome(drill, judge(drill, th, evidence_dir, figure))
            if drill.ready_at is None:
                break
    finally:
        load.stop()


__all__ = ["ROUTES", "Drill", "Outcome", "Thresholds", "affected", "dependants", "run_drills", "timeline_chart"]

"""The kills: one ``Drill`` per service, run in turn under one background load by ``FaultDrill``."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from harness import stack
from harness.faults.background import BackgroundLoad
from harness.faults.records import Drill, Thresholds, dependants
from harness.faults.verdicts import judge
from harness.httpclient import verify
from harness.result import CheckResult
from suite import services
from suite.net import port_pid
from suite.settings import Settings

log = logging.getLogger(__name__)


def serving_pid(settings: Settings, name: str) -> int | None:
    """The pid of the suite process listening on ``name``'s port (checked by its command line, so a
    pid reused by something else is never the one killed), or None."""
    pid = port_pid(settings.port(name))
    try:
        cmdline = psutil.Process(pid).cmdline() if pid else []
    except psutil.Error:
        return None
    return pid if "suite.serve" in cmdline and name in cmdline else None


def kill(settings: Settings, name: str, pid: int) -> None:
    """SIGKILL the process serving ``name``: on the docker backend the process of its container (found
    through the engine; ``docker kill`` would count as a manual stop, which the restart policy honours)."""
    if settings.backend == "docker":
        from suite.supervisor.docker import DockerBackend

        backend = DockerBackend(settings)
        container = backend.container(name)
        if container is None or container.attrs["State"].get("Pid") != pid:
            raise RuntimeError(f"{name}: pid {pid} on its port is not its container's process")
        backend.kill(name)
        log.info("fault drill: killed %s (container %s, pid %d)", name, container.name, pid)
        return
    os.kill(pid, signal.SIGKILL)
    log.info("fault drill: killed %s (pid %d)", name, pid)


def ready_again_at(settings: Settings, name: str, deadline: float, every_s: float = 0.25) -> float | None:
    """Epoch time at which ``name``'s /ready first passed, or None by ``deadline`` (monotonic)."""
    return ready_at(settings.url(name) + services.get(name).ready_path, deadline, verify(settings), every_s)


def ready_at(url: str, deadline: float, context, every_s: float = 0.25) -> float | None:
    """Epoch time at which GET ``url`` first answered 200, or None by ``deadline`` (monotonic)."""
    with httpx.Client(timeout=5.0, verify=context) as client:
        while time.monotonic() < deadline:
            try:
                if client.get(url).status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(every_s)
    return None


class FaultDrill:
    """``for drill in FaultDrill(...).run(): ...`` then ``results()``: one ``CheckResult`` per kill.

    ``suite status`` is asked twice, before the first kill and after the last (each call starts the
    CLI, seconds on a busy box): the restart counts and last exits are judged from the two.
    """

    def __init__(self, settings: Settings, phase: int, run_dir: Path, names: list[str] | None = None,
                 thresholds: Thresholds | None = None, users: int = 2, pace_s: float = 2.0,
                 settle_s: float = 1.0, figure: Path | None = None) -> None:
        phase_names = [s.name for s in services.for_phase(phase)]
        unknown = [n for n in names or [] if n not in phase_names]
        if unknown:
            raise ValueError(f"not services of phase {phase}: {', '.join(unknown)} "
                             f"(phase {phase}: {', '.join(phase_names)})")
        self.settings, self.phase, self.names = settings, phase, list(names or phase_names)
        self.th = thresholds or Thresholds()
        self.run_dir = Path(run_dir)
        self.users, self.pace_s, self.settle_s = users, pace_s, settle_s
        self.figure = figure or self.run_dir / "figures" / "fault_drill_timeline.svg"
        self.evidence_dir = self.run_dir / "faults"
        self.drills: list[Drill] = []
        self.before: dict[str, dict] = {}

    def run(self) -> Iterator[Drill]:
        """Kill each service in turn; yield each drill once the phase is ready again. Stops after
        a service that does not come back."""
        self.before = {s["name"]: s for s in stack.status(self.settings)}
        down = [s.name for s in services.for_phase(self.phase) if not self.before.get(s.name, {}).get("ready")]
        if down:
            raise RuntimeError(f"the fault drill needs every service of phase {self.phase} ready; "
                               f"not ready: {', '.join(down)}")
        load = BackgroundLoad(self.settings, self.phase, self.run_dir / "load" / "fault-drill", self.users,
                              self.pace_s, max_s=len(self.names) * (self.th.give_up_s + 30) + 60)
        load.start()
        try:
            for name in self.names:
                drill = self._one(name, load)
                self.drills.append(drill)
                yield drill
                if drill.ready_at is None:
                    break
        finally:
            load.stop()
            everything = load.samples()  # now with the requests that were still running at each kill's end
            for drill in self.drills:
                drill.attribute(everything, self.settle_s)

    def _one(self, name: str, load: BackgroundLoad) -> Drill:
        time.sleep(self.settle_s)  # load before the kill, for the timeline
        pid = serving_pid(self.settings, name)
        if pid is None:
            raise RuntimeError(f"no suite process serves {name} on port {self.settings.port(name)}")
        others = {d: serving_pid(self.settings, d) for d in dependants(name, self.phase)}
        drill = Drill(name, self.phase, pid, time.time())
        kill(self.settings, name, pid)
        deadline = time.monotonic() + self.th.give_up_s
        drill.ready_at = ready_again_at(self.settings, name, deadline)
        if drill.ready_at is None:
            proc = stack.run_suite(["logs", name, "-n", "40"], self.settings, timeout=60)
            drill.log_tail = proc.stdout.strip() or proc.stderr.strip()
        else:
            drill.new_pid = serving_pid(self.settings, name)
            drill.not_ready = [s.name for s in services.for_phase(self.phase)
                               if s.name != name and ready_again_at(self.settings, s.name, deadline) is None]
            drill.restarted = [d for d, p in others.items() if serving_pid(self.settings, d) != p]
            time.sleep(self.settle_s)  # load after the recovery, for the timeline
        drill.outage_end = drill.ready_at or time.time()
        drill.attribute(load.samples(), self.settle_s)  # so far: requests still running come at the end
        return drill

    def results(self) -> list[CheckResult]:
        """Judge every drill, with what ``suite status`` says now against what it said before."""
        after = {s["name"]: s for s in stack.status(self.settings)}
        self.evidence_dir.mkdir(parents=True, exist_ok=True)
        return [judge(d, self.before.get(d.service, {}), after.get(d.service, {}), self.th,
                      self.evidence_dir, self.figure) for d in self.drills]

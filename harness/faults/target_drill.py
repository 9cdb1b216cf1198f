"""The fault drill on a stack from a target file: each part the target allows to be killed, killed by
its own ``kill_command`` while a light load runs through its gateway, brought back by its
``restart_command`` (or by itself), and judged.

Per killed part, one ``fault.<part>`` result: the kill took (the part stopped answering), it was
ready again within its recovery budget, every other part answered again, and, for an inference
server behind the gateway, the share of the requests that needed it during the outage that failed
stays under ``inference_error_ratio`` (the gateway's fallbacks serve them). Parts the target does
not allow to be killed (``allow_kill``, a host beyond loopback not in ``allow_remote_hosts``) get a
``skip`` that says so. Nothing is killed before the load runs, and a part that does not come back
stops the drill (no further part is killed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from harness.faults.background import BackgroundLoad
from harness.faults.records import Drill, Thresholds
from harness.result import CheckResult, Stage, Status
from harness.target import Target
from harness.target import control as ctl


class TargetDrill:
    """``for drill in TargetDrill(target, run_dir).run(): ...`` then ``results()``."""

    def __init__(self, target: Target, run_dir: Path, names: list[str] | None = None,
                 thresholds: Thresholds | None = None, users: int = 2, pace_s: float = 2.0,
                 settle_s: float = 1.0) -> None:
        known = [p.name for p in target.parts()]
        unknown = [n for n in names or [] if n not in known]
        if unknown:
            raise ValueError(f"not parts of target {target.name}: {', '.join(unknown)} (parts: {', '.join(known)})")
        self.target, self.th = target, thresholds or Thresholds()
        self.names = list(names or known)
        self.run_dir = Path(run_dir)
        self.users, self.pace_s, self.settle_s = users, pace_s, settle_s
        self.drills: list[Drill] = []
        self.outcomes: dict[str, list[str]] = {}  # part -> what its commands did
        self.load_note = ""
        self.refused: dict[str, str] = {n: ctl.refusal(target, target.part(n)) for n in self.names}
        gw = target.gateway
        self.routes: dict[str, tuple[str, ...]] = {}
        if gw is not None:
            for request, model in (("chat", gw.chat_model), ("code", gw.code_model)):
                server = target.inference_for(model)
                self.routes[request] = (gw.name, *([server.name] if server else []))

    @property
    def drillable(self) -> list[str]:
        return [n for n in self.names if not self.refused[n]]

    def run(self) -> Iterator[Drill]:
        if not self.drillable:
            return
        gw = self.target.gateway
        if gw is None or not (gw.allow_load and self.target.remote_allowed(gw)):
            self.load_note = "no load through the gateway while parts were killed: " + (
                self.target.missing("gateway") if gw is None else f"{gw.name} does not allow load")
        load = None
        if gw is not None and gw.allow_load and self.target.remote_allowed(gw):
            load = BackgroundLoad(None, 1, self.run_dir / "load" / "fault-drill", self.users, self.pace_s,
                                  max_s=len(self.drillable) * (self.th.give_up_s + 30) + 60, target=self.target)
            load.start()
        try:
            for name in self.drillable:
                drill = self._one(name, load)
                self.drills.append(drill)
                yield drill
                if drill.ready_at is None:
                    break
        finally:
            if load is not None:
                load.stop()
                everything = load.samples()
                for drill in self.drills:
                    drill.attribute(everything, self.settle_s)

    def _one(self, name: str, load: BackgroundLoad | None) -> Drill:
        part = self.target.part(name)
        time.sleep(self.settle_s)
        drill = Drill(name, 0, 0, time.time(), routes=self.routes)
        killed = ctl.kill(part)
        notes = [f"kill: {killed.describe()}"]
        gone = ctl.gone_at(part, time.monotonic() + 30)
        if gone is None:
            notes.append("it still answered 30 s after the kill command")
        started = ctl.restart(part)
        notes.append(f"restart: {started.describe()}" if started else "restart: none (it comes back by itself)")
        drill.ready_at = ctl.ready_at(part, time.monotonic() + self.th.give_up_s)
        if drill.ready_at is not None:
            deadline = time.monotonic() + self.th.give_up_s
            drill.not_ready = [p.name for p in self.target.parts()
                               if p.name != name and ctl.ready_at(p, deadline) is None]
            time.sleep(self.settle_s)
        drill.outage_end = drill.ready_at or time.time()
        self.outcomes[name] = notes + ([] if killed.ok and gone is not None else ["the kill did not take"])
        if load is not None:
            drill.attribute(load.samples(), self.settle_s)
        return drill

    def results(self) -> list[CheckResult]:
        out = []
        for name in self.names:
            if self.refused[name]:
                out.append(CheckResult.skipped(f"fault.{name}", f"kill {name} under load", Stage.FAULT_DRILL,
                                               measured="not run", detail=self.refused[name]))
        for drill in self.drills:
            out.append(self._judge(drill))
        never = [n for n in self.drillable if n not in {d.service for d in self.drills}]
        for name in never:
            out.append(CheckResult.skipped(f"fault.{name}", f"kill {name} under load", Stage.FAULT_DRILL,
                                           measured="not run",
                                           detail="not run: an earlier part did not come back"))
        return out

    def _judge(self, drill: Drill) -> CheckResult:
        name = drill.service
        part = self.target.part(name)
        behind_gateway = self.target.role_of(part) == "inference" and any(name in r for r in self.routes.values())
        budget = self.th.recovery_for(name)
        goal = f"stopped by kill_command, ready again ≤ {budget:g} s, every other part ready again"
        if behind_gateway:
            goal += f", client errors ≤ {self.th.inference_error_ratio:.0%} (gateway fallback)"
        problems = [n for n in self.outcomes.get(name, []) if n == "the kill did not take"]
        if drill.recovery_s is None:
            problems.append(f"not ready again within {self.th.give_up_s:g} s; the drill stopped here")
            measured = "not restored"
        else:
            measured = f"ready again in {drill.recovery_s:.1f} s"
            if drill.recovery_s > budget:
                problems.append(f"recovery took {drill.recovery_s:.1f} s")
            if drill.not_ready:
                problems.append("not ready again: " + ", ".join(drill.not_ready))
        n = len(drill.samples)
        measured += (f"; {len(drill.failed)}/{n} affected requests failed ({drill.error_ratio:.0%})" if n
                     else "; no request needed it meanwhile")
        if drill.served_by_fallback:
            measured += f", {drill.served_by_fallback} served by the fallback"
        if behind_gateway and n and drill.error_ratio > self.th.inference_error_ratio:
            problems.append(f"client error ratio {drill.error_ratio:.1%} > {self.th.inference_error_ratio:.0%}: "
                            f"the gateway's fallback did not serve the requests for {name}")
        notes = self.outcomes.get(name, []) + ([self.load_note] if self.load_note else [])
        if drill.failed:
            notes.append("errors: " + "; ".join(sorted({(s.error or "")[:80] for s in drill.failed}))[:300])
        evidence = ["load/fault-drill/samples.jsonl"] if (self.run_dir / "load" / "fault-drill").is_dir() else []
        return CheckResult(f"fault.{name}", f"kill {name} under load", Stage.FAULT_DRILL,
                           Status.FAIL if problems else Status.PASS, target=goal, measured=measured,
                           evidence=evidence, detail="; ".join(problems + notes)[:1500],
                           started_at=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(drill.killed_at)))

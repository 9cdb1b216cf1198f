"""The pool drill: under load, ``kill -9`` one replica of a gateway pool and measure what the clients and
the gateway saw.

- **ejection**: time from the kill until the gateway takes the replica out of rotation (its
  ``/health`` says ``cooling``; polled every 0.1 s), and the attempts the gateway still sent it while
  it was down (its ``gateway_upstream_requests_total``: none unless every other replica failed or was full);
- **client errors**: failed share of the load's requests that overlapped the kill-to-readmission
  window (goal < 1 % with two replicas: the requests it held die with it and are replayed elsewhere);
- **readmission**: time from the replica's own ``/ready`` passing again (its supervisor restarted it)
  until the gateway has it back in rotation, and the first request it served after;
- the **traffic split** over time (``charts``: requests per replica per second) and each replica's own
  count of completions from its ``/metrics``.

The pool is read from the gateway's ``/health`` (``pools``), so the drill needs no access to its
settings. The kill is a SIGKILL to the suite process serving the replica's port on this machine, or
``kill``, a callable given the replica (a replica on another host is killed there).
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil

from harness.faults.background import BackgroundLoad
from harness.faults.drill import ready_at
from harness.httpclient import verify
from harness.load.samples import Sample
from harness.load.scenarios import Scenario
from harness.load.scrape import scrape
from harness.result import CheckResult, Stage
from suite.net import port_pid
from suite.settings import Settings

log = logging.getLogger(__name__)

COMPLETION_ROUTES = ("/v1/chat/completions", "/v1/completions")


class NotApplicable(RuntimeError):
    """Nothing to drill here: no pool of two or more replicas for the alias, or the replica to kill
    runs on another host."""


NoPool = NotApplicable


@dataclass(frozen=True)
class PoolThresholds:
    error_ratio: float = 0.01  # failed share of the requests that overlapped kill → readmission
    eject_s: float = 5.0  # out of rotation within this long after the kill
    readmit_s: float = 10.0  # back in rotation within this long after its /ready passed again
    give_up_s: float = 120.0  # not ready again by then: the drill ends, failed


@dataclass
class PoolKill:
    """One replica killed and what followed (epoch seconds)."""

    alias: str
    replica: str
    url: str
    pool: list[str]
    pid: int
    killed_at: float
    ejected_at: float | None = None
    ready_at: float | None = None
    readmitted_at: float | None = None
    attempts_while_down: int | None = None  # gateway attempts at it between ejection and ready
    samples: list[Sample] = field(default_factory=list)  # every request of the load
    own_counts: dict[str, tuple[tuple[float, float | None], tuple[float, float | None]]] = field(
        default_factory=dict)  # replica: ((count, process start) before, the same after)
    started_at: float = 0.0
    ended_at: float = 0.0

    @property
    def eject_s(self) -> float | None:
        return None if self.ejected_at is None else max(0.0, self.ejected_at - self.killed_at)

    @property
    def restart_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.killed_at

    @property
    def readmit_s(self) -> float | None:
        if self.readmitted_at is None or self.ready_at is None:
            return None
        return max(0.0, self.readmitted_at - self.ready_at)

    @property
    def window_end(self) -> float:
        return self.readmitted_at or self.ready_at or self.ended_at

    @property
    def window(self) -> list[Sample]:
        """Requests in flight at some moment between the kill and the readmission."""
        return [s for s in self.samples if not s.warmup and s.start < self.window_end and s.end > self.killed_at]

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.window if not s.ok]

    @property
    def error_ratio(self) -> float:
        return len(self.failed) / len(self.window) if self.window else 0.0

    def served_by(self, sample: Sample) -> str | None:
        _, sep, name = sample.name.partition(" @")
        return name if sep and sample.ok else None

    @property
    def first_served_again(self) -> float | None:
        after = [s.start for s in self.samples if self.served_by(s) == self.replica and self.ready_at
                 and s.start >= self.ready_at]
        return min(after) if after else None


def pools_of(settings: Settings) -> dict[str, list[dict]]:
    """The gateway's pools as its ``/health`` lists them (name, url, ready_path, state, in_flight)."""
    r = httpx.get(settings.url("gateway") + "/health", timeout=10, verify=verify(settings))
    r.raise_for_status()
    return r.json().get("pools", {})


def local_pid(url: str) -> int | None:
    """The pid of the suite process serving ``url``'s port here (by its command line, so a reused pid
    is never killed), or None when none does (the replica is on another host)."""
    port = urlsplit(url).port
    pid = port_pid(port) if port else None
    try:
        cmdline = psutil.Process(pid).cmdline() if pid else []
    except psutil.Error:
        return None
    return pid if any("suite.serve" in part for part in cmdline) else None


Kill = Callable[[dict], tuple[int, float]]  # replica -> (pid or 0, epoch seconds of the kill)


def kill_local(replica: dict) -> tuple[int, float]:
    pid = local_pid(replica["url"])
    if pid is None:
        raise NotApplicable(f"no suite process serves {replica['name']} ({replica['url']}) on this machine: a "
                            "replica on another host is killed there (PoolDrill(kill=...))")
    os.kill(pid, signal.SIGKILL)
    return pid, time.time()


def kill_command(template: str) -> Kill:
    """A kill that runs ``template`` (``{url}`` and ``{name}`` filled in; no shell) on this machine, for
    a replica on another host, e.g. ``ssh gpu-2 systemctl kill -s KILL suite-chat``. When its last line
    is ``PID EPOCH`` (what ``python -m harness.faults.pool kill URL`` prints), that is the kill; else
    the command's end is taken as its moment (its own start-up time then counts into the ejection)."""
    def kill(replica: dict) -> tuple[int, float]:
        argv = [part.format(url=replica["url"], name=replica["name"]) for part in shlex.split(template)]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        ended = time.time()
        if proc.returncode != 0:
            raise RuntimeError(f"kill command {argv!r} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
        last = (proc.stdout.strip().splitlines() or [""])[-1].split()
        try:
            return int(last[0]), float(last[1]) if len(last) > 1 else ended
        except (IndexError, ValueError):
            return 0, ended

    return kill


def own_completions(name: str, url: str, client: httpx.Client) -> tuple[float, float | None]:
    """(completions a replica answered by its own ``/metrics`` — ``http_requests_total`` of the
    completion routes, 200 —, its process start time); NaN when it does not answer."""
    snap = scrape(name, url + "/metrics", client)
    if not snap.ok:
        return math.nan, None
    return sum(snap.total("http_requests_total", route=route, status="200") for route in COMPLETION_ROUTES), snap.started


class GatewayWatch:
    """Polls the gateway's ``/health`` every ``every_s`` in a thread: when each replica changed state."""

    def __init__(self, settings: Settings, every_s: float = 0.1) -> None:
        self.url = settings.url("gateway") + "/health"
        self.context = verify(settings)
        self.every_s = every_s
        self.changes: list[tuple[float, str, str]] = []  # (epoch, replica, state)
        self._last: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pool-drill-watch", daemon=True)

    def __enter__(self) -> GatewayWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        with httpx.Client(timeout=2.0, verify=self.context) as client:
            while not self._stop.is_set():
                try:
                    states = client.get(self.url).json().get("upstreams", {})
                except (httpx.HTTPError, ValueError):
                    states = {}
                now = time.time()
                for name, state in states.items():
                    if self._last.get(name) != state:
                        self._last[name] = state
                        self.changes.append((now, name, state))
                self._stop.wait(self.every_s)

    def first(self, replica: str, state: str, after: float) -> float | None:
        return next((t for t, n, s in self.changes if n == replica and s == state and t >= after), None)

    def wait(self, replica: str, state: str, after: float, within_s: float) -> float | None:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            found = self.first(replica, state, after)
            if found is not None:
                return found
            time.sleep(0.05)
        return self.first(replica, state, after)


class PoolDrill:
    """``PoolDrill(settings, run_dir).run()`` then ``results()``."""

    def __init__(self, settings: Settings, run_dir: Path, alias: str = "chat", replica: str | None = None,
                 thresholds: PoolThresholds | None = None, users: int = 4, pace_s: float = 0.5,
                 max_tokens: int = 8, settle_s: float = 3.0, figure: Path | None = None,
                 kill: Kill = kill_local) -> None:
        self.settings, self.alias, self.replica = settings, alias, replica
        self.th = thresholds or PoolThresholds()
        self.run_dir = Path(run_dir)
        self.users, self.pace_s, self.max_tokens, self.settle_s = users, pace_s, max_tokens, settle_s
        self.figure = figure or self.run_dir / "figures" / f"pool_drill_{alias}.svg"
        self.kill = kill
        self.record: PoolKill | None = None

    def pool(self) -> list[dict]:
        pool = pools_of(self.settings).get(self.alias, [])
        if len(pool) < 2:
            raise NoPool(f"the gateway serves '{self.alias}' from {len(pool)} replica(s); the pool drill needs two "
                         f"or more (gateway.pools.{self.alias})")
        return pool

    def run(self) -> PoolKill:
        pool = self.pool()
        victim = next((r for r in pool if r["name"] == self.replica), None) if self.replica else pool[-1]
        if victim is None:
            raise ValueError(f"no replica {self.replica!r} in the {self.alias} pool "
                             f"({', '.join(r['name'] for r in pool)})")
        if self.kill is kill_local and local_pid(victim["url"]) is None:
            kill_local(victim)  # says why, before any load starts
        context = verify(self.settings)
        with httpx.Client(verify=context) as client:
            before = {r["name"]: own_completions(r["name"], r["url"], client) for r in pool}
        from harness.keys import run_keys

        scenario = Scenario(f"pool-drill-{self.alias}", "pool_drill.py", "gateway", 1, users=self.users,
                            spawn_rate=self.users, duration_s=self.th.give_up_s * 2 + 60, max_tokens=self.max_tokens,
                            description=f"load on the {self.alias} pool while one replica is killed")
        load = BackgroundLoad(self.settings, 1, self.run_dir / "load" / scenario.name, self.users, self.pace_s,
                              max_s=scenario.duration_s, scenario=scenario,
                              env={"LOAD_POOL_ALIAS": self.alias, "LOAD_API_KEY": run_keys(self.settings).guest})
        started = time.time()
        with GatewayWatch(self.settings) as watch:
            load.start()
            try:
                time.sleep(self.settle_s * 2)  # both replicas serving before the kill
                ordered = time.time()
                pid, killed_at = self.kill(victim)
                rec = PoolKill(self.alias, victim["name"], victim["url"], [r["name"] for r in pool], pid, killed_at,
                               started_at=started)
                log.info("pool drill: killed %s (pid %d)", victim["name"], pid)
                # from the moment the kill was ordered: a remote command may end after the gateway noticed
                rec.ejected_at = watch.wait(victim["name"], "cooling", ordered, self.th.eject_s * 4)
                attempts_at_ejection = self._attempts(victim["name"])
                rec.ready_at = ready_at(victim["url"] + victim.get("ready_path", "/ready"),
                                        time.monotonic() + self.th.give_up_s, context, every_s=0.1)
                if rec.ready_at is not None:
                    rec.attempts_while_down = int(self._attempts(victim["name"]) - attempts_at_ejection)
                    # its first return to rotation after the ejection (the gateway's probe may pass first)
                    rec.readmitted_at = watch.wait(victim["name"], "ok", rec.ejected_at or ordered,
                                                   rec.ready_at - time.time() + self.th.readmit_s * 3)
                    time.sleep(self.settle_s)  # traffic back on it, for the chart
            finally:
                load.stop()
        rec.ended_at = time.time()
        rec.samples = sorted(load.samples(), key=lambda s: s.start)
        with httpx.Client(verify=context) as client:
            rec.own_counts = {r["name"]: (before[r["name"]], own_completions(r["name"], r["url"], client)) for r in pool}
        if rec.readmitted_at is not None and rec.ready_at is not None and rec.readmitted_at < rec.ready_at:
            rec.readmitted_at = rec.ready_at  # the gateway's probe passed first: no later than its own
        self.record = rec
        return rec

    def _attempts(self, replica: str) -> float:
        with httpx.Client(verify=verify(self.settings)) as client:
            snap = scrape("gateway", self.settings.url("gateway") + "/metrics", client)
        return snap.total("gateway_upstream_requests_total", upstream=replica) if snap.ok else math.nan

    # -- verdicts -------------------------------------------------------------------------------
    def results(self) -> list[CheckResult]:
        from harness.faults.pool_chart import traffic_chart

        rec = self.record
        if rec is None:
            raise RuntimeError("run() first")
        traffic_chart(rec, self.figure)
        return judge(rec, self.th, [str(self.figure)])


def skipped(alias: str, reason: str) -> list[CheckResult]:
    return [CheckResult(f"pool.{alias}.drill", f"kill -9 one replica of the {alias} pool under load", Stage.FAULT_DRILL,
                        "skip", target="a pool of two or more replicas", measured="not run", detail=reason)]


def own_count_line(name: str, before: tuple[float, float | None], after: tuple[float, float | None]) -> str:
    if math.isnan(after[0]):
        return f"{name}: its /metrics did not answer"
    if before[1] != after[1] or math.isnan(before[0]):  # a new process: its counters began again
        return f"{name} counted {after[0]:g} completions itself since its restart"
    return f"{name} counted {after[0] - before[0]:g} completions itself"


def judge(rec: PoolKill, th: PoolThresholds, evidence: list[str]) -> list[CheckResult]:
    """Three results: ejection, client errors, readmission."""
    cid = f"pool.{rec.alias}"
    when = datetime.fromtimestamp(rec.killed_at, UTC).isoformat(timespec="seconds")
    problems, notes = [], []
    if rec.eject_s is None:
        problems.append(f"still in rotation {th.eject_s * 4:g} s after the kill")
    elif rec.eject_s > th.eject_s:
        problems.append(f"ejected after {rec.eject_s:.2f} s")
    if rec.attempts_while_down:  # the gateway tries a replica out of rotation only when all others failed or were busy
        notes.append(f"{rec.attempts_while_down} attempts reached it while it was down: every replica in rotation "
                     "had failed or was full (429) at those moments")
    measured = ("not ejected" if rec.eject_s is None else f"out of rotation {rec.eject_s:.2f} s after the kill") + (
        "" if rec.attempts_while_down is None else f"; {rec.attempts_while_down} gateway attempts at it while down")
    ejection = CheckResult(
        f"{cid}.ejection", f"kill -9 {rec.replica}: time until no request reaches it", Stage.FAULT_DRILL,
        "fail" if problems else "warn" if notes else "pass",
        target=f"≤ {th.eject_s:g} s; no attempt at it while down", unit="s",
        value=None if rec.eject_s is None else round(rec.eject_s, 3), measured=measured, evidence=evidence,
        started_at=when, detail="; ".join([*problems, *notes]))
    n, bad = len(rec.window), len(rec.failed)
    others = [r for r in rec.pool if r != rec.replica]
    split = {name: sum(1 for s in rec.window if rec.served_by(s) == name) for name in rec.pool}
    errors = CheckResult(
        f"{cid}.errors", f"client errors while {rec.replica} was down", Stage.FAULT_DRILL,
        "fail" if not n or rec.error_ratio >= th.error_ratio else "pass",
        target=f"< {th.error_ratio:.0%} of the requests between the kill and the readmission", value=round(rec.error_ratio, 4),
        unit="ratio", measured=f"{bad}/{n} failed ({rec.error_ratio:.1%})" if n else "no request in the window",
        evidence=evidence, started_at=when,
        detail="; ".join(x for x in [
            "served meanwhile: " + ", ".join(f"{k} {v}" for k, v in split.items()),
            f"{', '.join(others)} carried the pool" if split.get(rec.replica, 0) == 0 else "",
            "errors: " + "; ".join(sorted({(s.error or "")[:80] for s in rec.failed}))[:300] if bad else ""] if x))
    readmit_problems = []
    if rec.ready_at is None:
        readmit_problems.append(f"not ready again within {th.give_up_s:g} s")
    elif rec.readmit_s is None:
        readmit_problems.append(f"ready again but not back in rotation within {th.readmit_s * 3:g} s")
    elif rec.readmit_s > th.readmit_s:
        readmit_problems.append(f"back in rotation {rec.readmit_s:.1f} s after its /ready passed")
    first = rec.first_served_again
    counts = "; ".join(own_count_line(k, before, after) for k, (before, after) in rec.own_counts.items())
    readmission = CheckResult(
        f"{cid}.readmission", f"{rec.replica} back in rotation after its restart", Stage.FAULT_DRILL,
        "fail" if readmit_problems else "pass", target=f"≤ {th.readmit_s:g} s after its /ready passes again",
        value=None if rec.readmit_s is None else round(rec.readmit_s, 2), unit="s",
        measured="not back" if rec.readmit_s is None else
        f"back {rec.readmit_s:.1f} s after ready (restarted in {rec.restart_s:.1f} s)",
        evidence=evidence, started_at=when,
        detail="; ".join(x for x in [*readmit_problems,
                                     f"first request served by it {first - rec.killed_at:.1f} s after the kill"
                                     if first else "", counts] if x))
    return [ejection, errors, readmission]


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.faults.pool kill URL``: SIGKILL the suite process serving URL's port here and
    print its pid and the moment (what a ``pool_kill_command`` runs on the replica's own host)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "kill":
        sys.stderr.write("usage: python -m harness.faults.pool kill URL\n")
        return 2
    try:
        pid, at = kill_local({"name": args[1], "url": args[1]})
        sys.stdout.write(f"{pid} {at:.6f}\n")
    except NotApplicable as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

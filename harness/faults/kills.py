"""The durability drill's kills: which process dies with SIGKILL, at which moment, drawn from a seed.

A plan is a list like ``memory,tools,rag,rag@optimize,rag@backup,backup@backup``: ``SERVICE`` kills the
service at a random moment while the writers run; ``rag@optimize`` first starts a background optimize
of the drill's collection (``POST /admin/optimize/{name}``) and kills the RAG service while it is
under way (its copy, its optimizer child, or its shard swap); ``rag@backup`` kills the RAG service
while ``suite backup create`` takes its vector part; ``backup@backup`` kills ``suite backup create``
itself. The moments are drawn from ``random.Random(seed)`` and recorded, so a failing drill can be
run again with the same seed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field

import httpx

from harness import stack
from harness.faults.drill import ready_again_at, serving_pid
from harness.httpclient import client
from suite.settings import Settings

STATEFUL = ("memory", "rag", "tools")
MOMENTS = {"memory": ("write",), "tools": ("write",), "rag": ("write", "optimize", "backup"), "backup": ("backup",)}


@dataclass(frozen=True)
class Planned:
    target: str  # a service, or "backup" (the `suite backup create` process)
    moment: str  # write | optimize | backup
    at_s: float  # seconds after the writers started, drawn from the seed
    delay_s: float  # optimize / backup: how long after it started the kill comes

    @property
    def label(self) -> str:
        return self.target if self.moment == "write" else f"{self.target}@{self.moment}"


@dataclass
class Kill:
    planned: Planned
    pid: int | None = None
    at_s: float = 0.0  # when it happened, seconds after the writers started
    ready_after_s: float | None = None  # the service's /ready passed again (backup: n/a)
    note: str = ""  # what the moment was when the kill came (optimizing or not, backup outcome)
    problems: list[str] = field(default_factory=list)


def parse_plan(text: str) -> list[tuple[str, str]]:
    """``"memory,rag@optimize"`` as ``[("memory", "write"), ("rag", "optimize")]``; ValueError says what is wrong."""
    out = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        target, _, moment = item.partition("@")
        moment = moment or ("backup" if target == "backup" else "write")
        if moment not in MOMENTS.get(target, ()):
            known = ", ".join(f"{t}@{m}" if m != "write" else t for t, ms in MOMENTS.items() for m in ms)
            raise ValueError(f"kill {item!r}: not one of {known}")
        out.append((target, moment))
    return out


def schedule(plan: list[tuple[str, str]], seed: int, window_s: float, warmup_s: float) -> list[Planned]:
    """When each kill comes (seconds after the writers started), in order, drawn from ``seed``."""
    rng = random.Random(seed)
    times = sorted(rng.uniform(warmup_s, max(warmup_s, window_s)) for _ in plan)
    order = list(plan)
    rng.shuffle(order)
    return [Planned(t, m, round(at, 2), round(rng.uniform(0.1, 1.5), 2)) for (t, m), at in zip(order, times)]


class Killer:
    """Carries out a schedule; each kill waits for the one before to be ready again."""

    def __init__(self, settings: Settings, admin: dict[str, str], collection: str, give_up_s: float,
                 say=lambda _m: None) -> None:
        self.settings, self.admin, self.collection = settings, admin, collection
        self.give_up_s, self.say = give_up_s, say
        self.kills: list[Kill] = []

    def run(self, planned: list[Planned], t0: float, stop_after: float | None = None) -> list[Kill]:
        for p in planned:
            wait = t0 + p.at_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            kill = Kill(p)
            try:
                {"write": self._plain, "optimize": self._during_optimize, "backup": self._during_backup}[p.moment](kill)
            except Exception as exc:  # a kill that could not be carried out fails the drill, with why
                kill.problems.append(f"{type(exc).__name__}: {exc}"[:300])
            kill.at_s = kill.at_s or round(time.monotonic() - t0, 2)
            self.kills.append(kill)
            back = f"ready again after {kill.ready_after_s:.1f} s" if kill.ready_after_s is not None else ""
            self.say(f"  kill -9 {p.label} (pid {kill.pid}) at {kill.at_s:.1f} s{': ' + kill.note if kill.note else ''}"
                     f"{'; ' + back if back else ''}{'; ' + '; '.join(kill.problems) if kill.problems else ''}")
            if kill.pid is not None and kill.ready_after_s is None and p.target in STATEFUL:
                break  # a service that did not come back: no further kill
        return self.kills

    # -- moments ------------------------------------------------------------------------------
    def _kill_service(self, kill: Kill, name: str) -> None:
        pid = serving_pid(self.settings, name)
        if pid is None:
            raise RuntimeError(f"no suite process serves {name} on port {self.settings.port(name)}")
        kill.pid = pid
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)
        ready = ready_again_at(self.settings, name, time.monotonic() + self.give_up_s)
        if ready is None:
            kill.problems.append(f"{name} not ready again within {self.give_up_s:g} s")
        else:
            kill.ready_after_s = round(ready - killed_at, 2)

    def _plain(self, kill: Kill) -> None:
        self._kill_service(kill, kill.planned.target)

    def _index_state(self) -> str:
        """The drill collection's index state (``optimizing``…), or ``HTTP …`` when it cannot be read."""
        try:
            resp = client().get(self.settings.url("rag") + f"/collections/{self.collection}", headers=self.admin,
                                timeout=10)
        except httpx.HTTPError as exc:
            return f"HTTP error {type(exc).__name__}"
        return (resp.json().get("index") or {}).get("hnsw", "?") if resp.status_code == 200 else f"HTTP {resp.status_code}"

    def _during_optimize(self, kill: Kill) -> None:
        deadline = time.monotonic() + self.give_up_s  # the writers' first document makes the collection
        while self._index_state().startswith("HTTP") and time.monotonic() < deadline:
            time.sleep(0.5)
        resp = client().post(self.settings.url("rag") + f"/admin/optimize/{self.collection}", headers=self.admin,
                             json={}, timeout=30)
        if resp.status_code != 200:
            raise RuntimeError(f"could not start an optimize: HTTP {resp.status_code} {resp.text[:200]}")
        time.sleep(kill.planned.delay_s / 3)  # the copy, the optimizer, the swap: the first second or two
        kill.note = f"index {self._index_state()} when killed"
        self._kill_service(kill, "rag")

    def _started_writing(self, proc: subprocess.Popen, part: str, within_s: float = 60.0) -> bool:
        """Wait until the backup's set folder exists (``part``: and has that part's folder)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline and proc.poll() is None:
            pattern = f"*.partial/{part}" if part else "*.partial"
            if self.settings.backup_dir.is_dir() and any(p.is_dir() for p in self.settings.backup_dir.glob(pattern)):
                return True
            time.sleep(0.02)
        return False

    def _during_backup(self, kill: Kill) -> None:
        """Kill while ``suite backup create`` writes its set: the backup itself at a random moment after
        its set folder appeared, or the RAG service while it writes the vector part."""
        proc = subprocess.Popen([*stack.suite_command(), "backup", "create", "--json"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=stack.cli_env(self.settings),
                                start_new_session=True)
        if not self._started_writing(proc, "" if kill.planned.target == "backup" else "rag"):
            kill.note = "the backup never started writing"
        time.sleep(kill.planned.delay_s / (3 if kill.planned.target == "backup" else 10))
        if kill.planned.target == "backup":
            kill.pid = proc.pid
            running = proc.poll() is None
            if running:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            kill.note = "suite backup create killed mid-way" if running else \
                f"suite backup create had finished (exit {proc.returncode}) before the kill"
        else:
            self._kill_service(kill, "rag")
            try:
                out, err = proc.communicate(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            kill.note = (f"suite backup create exit {proc.returncode}: "
                         + (err.strip().splitlines() or ["sealed a set"])[-1][:160])
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

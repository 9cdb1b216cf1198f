"""Is the box ours? CPU steal, CPU taken by processes outside the stack and the harness, and a short
fixed CPU benchmark — so a report can tell a slow stack from a busy box.

- **Steal**: time the hypervisor gave this VM's CPUs to someone else (``/proc/stat``), in % of all
  CPU time.
- **Outside CPU**: the box's busy time (user + nice + system, all cores) less what *our* processes
  used, in % of the whole box (100 % = every core busy). Ours: the stack (every process listening on
  one of the settings' service ports, its process tree, and a supervising parent; on the docker
  backend the containers' processes, by the pids ``suite status`` reports) and the harness (the
  top-most Python process above this one — ``harness run``, the Jupyter server, pytest — and
  everything below it: kernels, Locust, ``suite`` children). Our reaped children count through
  their parent's ``children_*`` times, and the outside share is the box's total less ours, so
  short-lived processes are not lost on either side. The processes outside that used the most CPU
  are named, with their command line (by their own time: short-lived ones, a build's compilers,
  are in the total but too brief to name).
- **Benchmark**: one worker per core hashes the same 512 MB (sha256) at the same moment; each
  worker's CPU time ÷ its wall time says how much of a core it got (``available``), and MB per CPU
  second how fast a core is. On an idle box every worker gets a whole core.

Thresholds (``contended``) — chosen from what quiet and busy boxes show (``docs/verdicts.md``):
outside CPU ≥ ``OUTSIDE_PCT`` (20 % of the box: 0.4 of a core on 2 cores; one busy outside process
on 2 cores is 50 %), steal ≥ ``STEAL_PCT`` (10 %), or the benchmark getting less than
``AVAILABLE_PCT`` (80 %) of the cores.

``check_contention`` is the environment runbook's check; ``CpuWatch`` samples the same every second
while a load scenario runs (``harness.load.plan``), where a contended scenario's gates cannot PASS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import psutil

from harness.result import CheckResult, Stage, Status, timed
from suite.settings import Settings

STEAL_PCT = 10.0
OUTSIDE_PCT = 20.0
AVAILABLE_PCT = 80.0
BENCH_MB = 512  # per worker: ~0.35 s of one AMD EPYC core (sha256 with SHA extensions)
_BENCH = """
import hashlib, json, sys, time
mb, start = int(sys.argv[1]), float(sys.argv[2])
block = bytes(range(256)) * 4096
while time.time() < start:
    time.sleep(0.002)
t0, c0 = time.perf_counter(), time.process_time()
h = hashlib.sha256()
for _ in range(mb):
    h.update(block)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}))
"""


# -- whose processes ---------------------------------------------------------------------------

def harness_root(pid: int | None = None) -> int:
    """The top-most Python process of the unbroken chain of Python processes above ``pid`` (this
    one): ``harness run`` above a kernel, the Jupyter server above a notebook's, pytest above a test."""
    proc = psutil.Process(pid)
    root = proc.pid
    try:
        while (parent := proc.parent()) is not None and _is_python(parent):
            root, proc = parent.pid, parent
    except psutil.Error:
        pass
    return root


def _is_python(proc: psutil.Process) -> bool:
    try:
        return os.path.basename(proc.exe()).startswith("python")
    except psutil.Error:
        return False


def stack_pids(settings: Settings, ports: set[int] | None = None) -> set[int]:
    """The stack's processes to start the trees from: every listener on a service port of ``settings``
    (or on ``ports``: a target's loopback parts) and its parent when that is a supervisor (not init);
    on docker, the containers' main pids."""
    ours = ports is None
    ports = {urlparse(settings.url(name)).port for name in _service_names()} if ports is None else ports
    found: set[int] = set()
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports and conn.pid:
                found.add(conn.pid)
    except psutil.Error:
        pass
    for pid in list(found):
        try:
            parent = psutil.Process(pid).parent()
            if parent is not None and parent.pid > 1 and "supervisord" in " ".join(parent.cmdline()):
                found.add(parent.pid)
        except psutil.Error:
            pass
    if ours and settings.backend == "docker":
        from harness import stack

        try:
            found |= {int(s["pid"]) for s in stack.status(settings) if s.get("pid")}
        except (RuntimeError, OSError, ValueError):
            pass
    return found


def _service_names() -> list[str]:
    from suite import services

    return [s.name for s in services.SERVICES]


def our_roots(settings: Settings | None, target=None) -> set[int]:
    """The roots of every process tree that is ours (module docstring); with a target file
    (``harness.target``), the processes listening on its loopback parts' ports are the stack's."""
    if target is not None and not target.ours:
        ports = {p.port for p in target.parts() if p.loopback}
        return {harness_root(), *stack_pids(settings or Settings(), ports)}
    return {harness_root(), *(stack_pids(settings) if settings is not None else ())}


# -- one reading of the box --------------------------------------------------------------------

@dataclass
class _Tick:
    t: float
    busy: float
    steal: float
    total: float
    ours: float
    per_pid: dict[int, tuple[str, float]]  # processes outside: pid -> (name, own CPU s)


def _tick(roots: set[int]) -> _Tick:
    cpu = psutil.cpu_times()
    procs: dict[int, tuple[int, str, float, float]] = {}  # pid -> ppid, name, own CPU s, reaped children's
    for p in psutil.process_iter(["pid", "ppid", "name", "cpu_times"]):
        times = p.info["cpu_times"]
        if times is None:
            continue
        reaped = getattr(times, "children_user", 0) + getattr(times, "children_system", 0)
        procs[p.info["pid"]] = (p.info["ppid"] or 0, p.info["name"] or "?", times.user + times.system, reaped)
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in procs.items():
        children.setdefault(ppid, []).append(pid)
    ours: set[int] = set()
    todo = [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        if pid not in ours:
            ours.add(pid)
            todo.extend(children.get(pid, []))
    steal = getattr(cpu, "steal", 0.0)
    total = sum(cpu) - getattr(cpu, "guest", 0.0) - getattr(cpu, "guest_nice", 0.0)  # guest is inside user
    # ours with their reaped children (Locust, once its kernel waited for it); outside ones by their own
    # time only: a shell reaping a long job would otherwise show that job's whole life in one second
    return _Tick(time.monotonic(), cpu.user + cpu.nice + cpu.system, steal, total,
                 sum(procs[p][2] + procs[p][3] for p in ours),
                 {pid: (name, own) for pid, (_, name, own, _) in procs.items() if pid not in ours})


@dataclass
class Benchmark:
    workers: int
    mb: int
    wall_s: list[float]
    cpu_s: list[float]
    error: str = ""

    @property
    def available_pct(self) -> float | None:
        """How much of its cores the benchmark got (100 %: every worker had a whole core)."""
        return 100 * sum(self.cpu_s) / sum(self.wall_s) if self.wall_s and sum(self.wall_s) > 0 else None

    @property
    def mb_per_cpu_s(self) -> float | None:
        return self.mb * len(self.cpu_s) / sum(self.cpu_s) if self.cpu_s and sum(self.cpu_s) > 0 else None

    def describe(self) -> str:
        if self.available_pct is None:
            return f"CPU benchmark failed: {self.error or 'no worker answered'}"
        return (f"CPU benchmark: {self.available_pct:.0f} % of {self.workers} core(s) available "
                f"(sha256 {self.mb_per_cpu_s:.0f} MB per CPU second)")


def cpu_benchmark(workers: int | None = None, mb: int = BENCH_MB, timeout_s: float = 60.0) -> Benchmark:
    """Hash ``mb`` MB on ``workers`` processes (one per core) started at the same moment."""
    workers = workers or os.cpu_count() or 1
    start = time.time() + 0.5  # every worker's interpreter is up by then
    procs = [subprocess.Popen([sys.executable, "-c", _BENCH, str(mb), f"{start:.3f}"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    wall, cpu, errors = [], [], []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout_s)
            data = json.loads(out)
            wall.append(float(data["wall"]))
            cpu.append(float(data["cpu"]))
        except (subprocess.TimeoutExpired, ValueError, KeyError) as exc:
            proc.kill()
            errors.append(str(exc)[:200])
    return Benchmark(workers, mb, wall, cpu, "; ".join(errors))


@dataclass
class CpuReading:
    """What the box did over a window (module docstring)."""

    seconds: float
    cores: int
    steal_pct: float
    outside_pct: float  # of the whole box
    outside_max_pct: float  # the busiest interval
    ours_pct: float
    top: list[tuple[str, float]] = field(default_factory=list)  # outside processes: label, % of one core
    benchmark: Benchmark | None = None
    outside_limit_pct: float = OUTSIDE_PCT

    def reasons(self, names: int = 3) -> list[str]:
        """What made the box contended, naming the ``names`` busiest outside processes; empty when it
        was not."""
        out = []
        if self.outside_pct >= self.outside_limit_pct:
            listed = ", ".join(f"{label} {pct:.0f} %" for label, pct in self.top[:names])
            out.append(f"processes outside the stack and the harness took {self.outside_pct:.0f} % of "
                       f"{self.cores} cores" + (f" ({listed} of a core)" if listed else ""))
        if self.steal_pct >= STEAL_PCT:
            out.append(f"the hypervisor stole {self.steal_pct:.0f} % of the CPU time")
        bench = self.benchmark
        if bench is not None and bench.available_pct is not None and bench.available_pct < AVAILABLE_PCT:
            out.append(f"the CPU benchmark got {bench.available_pct:.0f} % of {bench.workers} core(s)")
        return out

    @property
    def contended(self) -> bool:
        return bool(self.reasons())

    def describe(self) -> str:
        """``steal 0.2 %, outside the stack 4 % of 2 cores (busiest second 9 %), ...``"""
        parts = [f"steal {self.steal_pct:.1f} %",
                 f"outside the stack {self.outside_pct:.0f} % of {self.cores} cores (busiest second "
                 f"{self.outside_max_pct:.0f} %)", f"ours {self.ours_pct:.0f} %"]
        if self.top:
            parts.append("top outside: " + ", ".join(f"{label} {pct:.0f} % of a core" for label, pct in self.top))
        if self.benchmark is not None:
            parts.append(self.benchmark.describe())
        return "; ".join(parts) + f" (over {self.seconds:.0f} s)"


class CpuWatch:
    """``with CpuWatch(settings) as w: ...; w.reading()``: the box sampled every ``every_s``."""

    def __init__(self, settings: Settings | None = None, every_s: float = 1.0, roots: set[int] | None = None,
                 benchmark: Benchmark | None = None, outside_limit_pct: float = OUTSIDE_PCT) -> None:
        self.settings, self.every_s, self.benchmark = settings, every_s, benchmark
        self.outside_limit_pct = outside_limit_pct
        self.roots = roots
        self.ticks: list[_Tick] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.ticks.append(_tick(self.roots or set()))

    def __enter__(self) -> CpuWatch:
        if self.roots is None:
            self.roots = our_roots(self.settings)
        self.ticks = [_tick(self.roots)]
        self._thread = threading.Thread(target=self._sample, daemon=True, name="cpu-watch")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.ticks.append(_tick(self.roots or set()))

    def reading(self) -> CpuReading:
        """The box so far (callable while the watch runs)."""
        reading = reading_of(list(self.ticks), self.benchmark)
        reading.outside_limit_pct = self.outside_limit_pct
        return reading

    def contended(self) -> str:
        """Why the box is contended so far ("" when it is not)."""
        return "; ".join(self.reading().reasons()) if len(self.ticks) > 1 else ""


def reading_of(ticks: list[_Tick], benchmark: Benchmark | None = None) -> CpuReading:
    cores = psutil.cpu_count() or 1
    first, last = ticks[0], ticks[-1]
    seconds = max(last.t - first.t, 1e-6)
    outside = worst = 0.0
    for a, b in zip(ticks, ticks[1:]):
        span = max(b.t - a.t, 1e-6)
        part = max(0.0, (b.busy - a.busy) - max(0.0, b.ours - a.ours))
        outside += part
        worst = max(worst, 100 * part / (span * cores))
    per_pid = []
    for pid, (name, spent) in last.per_pid.items():
        before = first.per_pid.get(pid, (name, 0.0))[1] if pid in first.per_pid else 0.0
        if spent - before > 0:
            per_pid.append((f"{name} (pid {pid})", 100 * (spent - before) / seconds))
    per_pid.sort(key=lambda item: -item[1])
    total = max(last.total - first.total, 1e-6)
    top = [(_label(label), pct) for label, pct in per_pid[:8] if pct >= 1.0]
    return CpuReading(seconds, cores, 100 * (last.steal - first.steal) / total, 100 * outside / (seconds * cores),
                      worst, 100 * max(0.0, last.ours - first.ours) / (seconds * cores), top, benchmark)


def _label(label: str) -> str:
    """``python (pid 42)`` -> ``python (pid 42: make -j2 all)``, the command line while it still runs."""
    try:
        pid = int(label.rsplit("pid ", 1)[1].rstrip(")"))
        args = psutil.Process(pid).cmdline()
    except (IndexError, ValueError, psutil.Error):
        return label
    # each argument shortened on its own, so a `python -c <code> ARGS` still shows its ARGS
    command = " ".join(" ".join(a.split())[:40] + ("..." if len(" ".join(a.split())) > 40 else "") for a in args)
    command = command if len(command) <= 120 else command[:117] + "..."
    return f"{label[:-1]}: {command})" if command else label


# -- the environment check ---------------------------------------------------------------------

def check_contention(settings: Settings, window_s: float = 3.0, target=None) -> list[CheckResult]:
    """``env.cpu.contention``: steal and outside CPU over ``window_s``, then the benchmark. A contended
    box is a warning here (it may be quiet again by the time the load runs; the load runbook measures
    again and its gates cannot pass on a contended box). ``target``: whose processes are the stack."""
    with timed() as t:
        with CpuWatch(settings, roots=our_roots(settings, target) if target is not None else None) as watch:
            time.sleep(window_s)
        reading = watch.reading()
        reading.benchmark = cpu_benchmark()
    reasons = reading.reasons()
    bench = reading.benchmark
    return [CheckResult(
        "env.cpu.contention", "CPU contention: steal, processes outside the stack, a fixed benchmark",
        Stage.ENVIRONMENT, Status.WARN if reasons else Status.PASS,
        target=f"outside < {OUTSIDE_PCT:g} %, steal < {STEAL_PCT:g} %, benchmark >= {AVAILABLE_PCT:g} % of the cores",
        value=round(reading.outside_pct, 1), unit="%",
        measured=f"outside {reading.outside_pct:.0f} %, steal {reading.steal_pct:.1f} %"
                 + (f", benchmark {bench.available_pct:.0f} %" if bench and bench.available_pct is not None else ""),
        detail=("box contended: " + "; ".join(reasons) + ". " if reasons else "") + reading.describe(),
        caveat="; ".join(reasons), **t.fields())]



def box_lines(seconds: float = 10.0, rounds: int = 3, settings: Settings | None = None):
    """``harness box``: one reading per round, as text (to calibrate the thresholds on a quiet box)."""
    settings = settings or Settings()
    for number in range(1, rounds + 1):
        with CpuWatch(settings) as watch:
            time.sleep(seconds)
        reading = watch.reading()
        reading.benchmark = cpu_benchmark()
        verdict = "CONTENDED: " + "; ".join(reading.reasons()) if reading.contended else "quiet"
        yield f"round {number}: {verdict}\n  {reading.describe()}"

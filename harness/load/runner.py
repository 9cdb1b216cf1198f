"""Run one scenario: Locust headless in a subprocess, its outputs kept, raw samples merged.

Locust is never imported here: inside a Jupyter kernel its gevent monkey-patching hangs the kernel,
so it always runs as ``python -m locust`` in a child process. Outputs go to ``<out_dir>/``:
``locust_stats.csv`` (+ history, failures, exceptions; rewritten by Locust once a second), ``locust.html``, ``locust.json``,
``locust.log``, the per-process ``samples-<pid>.jsonl``, the merged ``samples.jsonl``,
``scenario.json`` (the scenario as run) and ``budget`` (the request budget as the run moved it).

While Locust runs, the harness reads the samples every half second and judges the scenario's gates
over them (``harness.load.gates``, the requests not yet done counted as unknown). A count-bounded
run is

- **stopped early** only when a gate is decided against (``abort_on``): whatever the remaining
  requests do, it fails;
- **extended** while a percentile gate is undecided (``extend_on``; a maximum or a ratio is decided
  by the requests allowed, not by more) and the box is not contended: once the stated count is (nearly) done,
  the budget grows to the count the samples so far project would decide it, up to the scenario's
  ``budget`` (more requests at the same concurrency; the users wait at most half a second for it);
- **capped** at ``max_run_s`` for the stated count, growing in proportion when the budget grows
  (``max_run_s × allowed / requests``): past it the run is stopped and the requests not done are
  failures (never run, or cut off and written as censored samples by the locustfile).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from harness.errors import RunbookError
from harness.load import samples as samples_mod
from harness.load import stats
from harness.load.gates import Evidence, evaluate
from harness.load.progress import progress_line
from harness.load.samples import Sample
from harness.load.scenarios import Scenario
from harness.load.thresholds import Threshold
from harness.result import Status, now_iso
from suite.fsio import write_json
from suite.net import free_port

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SATURATION_MARK = "CPU usage above 90%"  # Locust's own warning when the generator is the bottleneck
SCENARIO_FILE = "scenario.json"  # the scenario as run (users, targets, ...), for later readers
BUDGET_FILE = "budget"  # {"allowed": N, "final": bool}: read by load/_common.py
CAP_MARGIN_S = 15.0  # Locust's -t past the harness's cap of a count-bounded run


class LoadError(RunbookError):
    """A load run that could not be started (bad host, missing locustfile)."""


@dataclass
class LoadRun:
    """What one scenario run left behind, and the samples every statistic is computed from."""

    scenario: Scenario
    host: str
    out_dir: Path
    processes: int
    warmup_s: float
    exit_code: int
    started_at: str
    duration_s: float
    samples: list[Sample] = field(default_factory=list)  # measured (warm-up excluded)
    warmup_samples: list[Sample] = field(default_factory=list)
    aborted: str = ""  # why the run was stopped early (a gate decided against, an interruption), if it was
    generator_saturated: bool = False
    locust_percentiles: dict[str, dict[str, float]] = field(default_factory=dict)
    planned: int = 0  # measured requests the run was to complete at its end (the stated count, or extended)
    capped: str = ""  # the time cap that ended the run before its count, if one did
    extensions: list[str] = field(default_factory=list)  # "20 -> 72: p95<70s undecided (...)" per extension

    @property
    def count_bounded(self) -> bool:
        return bool(self.scenario.requests)

    @property
    def completed(self) -> int:
        """Measured requests that finished (a cut-off one did not)."""
        return sum(not s.censored for s in self.samples)

    @property
    def incomplete(self) -> bool:
        """A count-bounded run that did not complete its count."""
        return self.count_bounded and self.completed < self.planned

    def evidence(self) -> Evidence:
        """What the gates judge: the samples, and what is missing of the count (failures unless the run
        was stopped early on purpose)."""
        return Evidence(self.samples, self.planned if self.count_bounded else 0, missing_failed=not self.aborted)

    @property
    def samples_file(self) -> Path:
        return self.out_dir / samples_mod.MERGED

    @property
    def html_file(self) -> Path:
        return self.out_dir / "locust.html"

    @property
    def log_file(self) -> Path:
        return self.out_dir / "locust.log"

    @property
    def sample_files(self) -> list[Path]:
        return samples_mod.sample_files(self.out_dir)

    def rows(self) -> list[stats.RowStats]:
        return stats.table(self.samples, label=f"{self.scenario.name} (all)")

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for path in (self.log_file, self.out_dir / "locust.out"):
            if path.exists():
                parts += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(parts[-lines:])


def check_host(host: str, allow_remote: bool = False) -> str:
    """Load goes to this machine only unless explicitly allowed."""
    parsed = urlparse(host)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise LoadError(f"load host {host!r} is not an http(s) URL")
    if parsed.hostname not in LOOPBACK and not allow_remote:
        raise LoadError(f"load host {host!r} is not loopback; load is only aimed at 127.0.0.1 "
                        "(pass allow_remote=True to aim it elsewhere on purpose)")
    return host.rstrip("/")


@dataclass(frozen=True)
class Workers:
    """The workers of a distributed run: Locust's master runs here and collects, ``count`` workers are
    started through ``launch`` — one command prefix per host, used in turn: ``""`` this host, ``ssh
    gpu-3``, ``ip netns exec NS`` — and connect to the master at ``connect`` (default ``bind``, the
    address the master listens on: loopback reaches only workers on this host). A worker needs the
    same checkout at the same path; its configuration and the stack's CA come from the master, and
    its samples go back to the master (``load/_common.py``)."""

    count: int
    launch: tuple[str, ...] = ("",)
    bind: str = "127.0.0.1"
    connect: str = ""
    wait_s: int = 60  # workers that have not connected by then: the run ends (Locust's --expect-workers-max-wait)

    def command(self, scenario: Scenario, index: int, port: int, loglevel: str = "INFO") -> list[str]:
        prefix = shlex.split(self.launch[index % len(self.launch)]) if self.launch else []
        return [*prefix, sys.executable, "-m", "locust", "-f", str(scenario.locustfile_path), "--worker",
                "--master-host", self.connect or self.bind, "--master-port", str(port), "--loglevel", loglevel]


def locust_command(scenario: Scenario, host: str, out_dir: Path, processes: int, run_time_s: float,
                   loglevel: str = "INFO", stop_timeout_s: float = 30.0, workers: Workers | None = None,
                   master_port: int = 0) -> list[str]:
    """The ``python -m locust`` command line of a headless run of ``scenario`` (with ``workers``: its
    master, listening on ``master_port``)."""
    users, spawn = (1, 1) if scenario.open_model else (scenario.users, scenario.spawn_rate)  # one timetable
    cmd = [sys.executable, "-m", "locust", "-f", str(scenario.locustfile_path), "--headless",
           "-u", str(users), "-r", f"{spawn:g}", "-t", f"{int(max(1, run_time_s))}s",
           "--host", host, "--csv", str(out_dir / "locust"), "--html", str(out_dir / "locust.html"),
           "--json-file", str(out_dir / "locust"), "--only-summary", "--exit-code-on-error", "0",
           "--stop-timeout", f"{stop_timeout_s:g}", "--loglevel", loglevel, "--logfile", str(out_dir / "locust.log")]
    if workers is not None:
        cmd += ["--master", "--expect-workers", str(workers.count), "--expect-workers-max-wait", str(workers.wait_s),
                "--master-bind-host", workers.bind, "--master-bind-port", str(master_port)]
    elif processes > 1:
        port = free_port()  # not 5557: several runs (tests, engineers) may share this box
        cmd += ["--processes", str(processes), "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(port), "--master-port", str(port)]
    return cmd


def run_scenario(scenario: Scenario, host: str, out_dir: Path, *, processes: int = 1, warmup_s: float = 0.0,
                 abort_on: list[Threshold] | None = None, extend_on: list[Threshold] | None = None,
                 phase: int = 1, max_run_s: float = 300.0, allow_remote: bool = False,
                 extra_env: dict[str, str] | None = None, progress: Callable[[str], None] | None = None,
                 progress_every_s: float = 5.0, stop_timeout_s: float = 30.0,
                 contended: Callable[[], str] | None = None,
                 stop_on: Callable[[list[Sample]], str] | None = None, workers: Workers | None = None) -> LoadRun:
    """Run ``scenario`` against ``host`` and return its samples; never raises for a bad result.

    The stop condition is the scenario's request count and/or duration. For a count-bounded run,
    ``abort_on`` stops it as soon as one of those thresholds is decided against, ``extend_on`` extends
    it up to ``scenario.budget`` while one of them is undecided, and ``max_run_s`` caps it (module
    docstring). ``progress`` gets a line every ``progress_every_s`` (requests so far, failures,
    current p95, rate, ETA) computed from the samples written so far. When the run stops, requests
    in flight get ``stop_timeout_s`` to finish; those still running then are cut off (censored
    samples). The scenario as run goes to ``scenario.json`` beside the samples. ``stop_on`` is asked
    every half second with the samples so far and stops the run early with the reason it returns
    (the capacity search's over-saturation: ``harness.load.saturation``). ``workers``: a distributed
    run (``Workers``) instead of ``processes`` on this host.
    """
    launch = _prepare(scenario, check_host(host, allow_remote), Path(out_dir), processes=processes,
                      warmup_s=warmup_s, phase=phase, max_run_s=max_run_s, extend=bool(extend_on),
                      extra_env=extra_env, progress=progress, stop_timeout_s=stop_timeout_s,
                      contended=contended, workers=workers)
    started_at, t0 = now_iso(), time.perf_counter()
    outcome = _supervise(launch, t0, abort_on or [], extend_on or [], stop_on, progress, progress_every_s)
    return _collect(launch, started_at, round(time.perf_counter() - t0, 2), outcome)


@dataclass
class _Launch:
    """A prepared run: the Locust command lines, their environment, the budget that steers the run."""

    scenario: Scenario
    host: str
    out_dir: Path
    cmd: list[str]
    env: dict[str, str]
    budget: Budget
    run_time: float  # Locust's own -t: the backstop behind the harness's cap
    processes: int
    workers: Workers | None
    port: int
    warmup_s: float
    stop_timeout_s: float
    max_run_s: float


@dataclass
class _Outcome:
    """How the run ended: Locust's exit status, and why the harness stopped it (empty when it did not)."""

    returncode: int | None
    aborted: str = ""
    capped: str = ""


def _prepare(scenario: Scenario, host: str, out_dir: Path, *, processes: int, warmup_s: float, phase: int,
             max_run_s: float, extend: bool, extra_env: dict[str, str] | None,
             progress: Callable[[str], None] | None, stop_timeout_s: float,
             contended: Callable[[], str] | None, workers: Workers | None) -> _Launch:
    """Check the request, empty ``out_dir`` of an earlier run, write ``scenario.json``, build the command."""
    if not scenario.locustfile_path.is_file():
        raise LoadError(f"locustfile {scenario.locustfile_path} of scenario {scenario.name!r} does not exist")
    if processes < 1:
        raise LoadError(f"processes must be >= 1 (got {processes})")
    if scenario.open_model and (processes > 1 or workers is not None):
        # one timetable, one process: gevent issues hundreds at once
        log.info("load %s: an open-model scenario runs in one Locust process (its timetable is one schedule)",
                 scenario.name)
        processes, workers = 1, None
    if workers is not None and (workers.count < 1 or processes > 1):
        raise LoadError(f"a distributed run takes workers >= 1 and processes = 1 (got {workers.count}, {processes})")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*samples_mod.sample_files(out_dir), out_dir / samples_mod.MERGED, out_dir / "stop"]:
        old.unlink(missing_ok=True)  # a rerun into the same folder must not mix in old samples
    budget = Budget(scenario, out_dir / BUDGET_FILE, max_run_s, extend=extend, progress=progress,
                    contended=contended)
    # a count-bounded run is capped by the harness (a clear reason, the cap growing with extensions);
    # Locust's own run time is the backstop, a little later
    run_time = (scenario.duration_s or budget.cap_s(budget.most) + CAP_MARGIN_S) + warmup_s
    port = free_port(workers.bind) if workers is not None else 0
    cmd = locust_command(scenario, host, out_dir, processes, run_time, stop_timeout_s=stop_timeout_s,
                         workers=workers, master_port=port)
    write_json(out_dir / SCENARIO_FILE, {
        **asdict(scenario), "host": host, "processes": workers.count if workers else processes, "warmup_s": warmup_s,
        "phase": phase, "max_run_s": max_run_s, "workers": asdict(workers) if workers else None})
    env = {**os.environ, "LOAD_SAMPLES_DIR": str(out_dir), "LOAD_REQUESTS": str(scenario.requests),
           "LOAD_BUDGET_FILE": str(budget.path), "LOAD_WARMUP_S": str(warmup_s),
           "LOAD_MAX_TOKENS": str(scenario.max_tokens), "LOAD_PHASE": str(phase),
           "LOAD_STOP_FILE": str(out_dir / "stop"), **open_model_env(scenario), **(extra_env or {})}
    log.info("load %s: %s", scenario.name, " ".join(cmd))
    return _Launch(scenario, host, out_dir, cmd, env, budget, run_time, processes, workers, port, warmup_s,
                   stop_timeout_s, max_run_s)


def _supervise(launch: _Launch, t0: float, abort_on: list[Threshold], extend_on: list[Threshold],
               stop_on: Callable[[list[Sample]], str] | None, progress: Callable[[str], None] | None,
               progress_every_s: float) -> _Outcome:
    """Start Locust (and its workers), then every half second: stop it when a gate is lost, ``stop_on``
    says so or the cap is reached (the stop file), steer the budget, print progress; wait for its end."""
    scenario, out_dir, budget, workers = launch.scenario, launch.out_dir, launch.budget, launch.workers
    outcome = _Outcome(None)
    helpers: list[subprocess.Popen] = []
    with open(out_dir / "locust.out", "w") as out:
        proc = subprocess.Popen(launch.cmd, stdout=out, stderr=subprocess.STDOUT, env=launch.env, cwd=str(out_dir),
                                start_new_session=True)
        for i in range(workers.count if workers else 0):
            with open(out_dir / f"locust-worker-{i + 1}.out", "w") as wout:
                helpers.append(subprocess.Popen(workers.command(scenario, i, launch.port), stdout=wout,
                                                stderr=subprocess.STDOUT, cwd=str(out_dir), start_new_session=True))
        # Locust's -t, its stop timeout, its reports
        deadline = time.monotonic() + launch.run_time + launch.stop_timeout_s + 60
        next_note = time.monotonic() + progress_every_s
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if now > deadline:
                    log.error("load %s: locust did not stop in time; killing it", scenario.name)
                    _kill(proc)
                    outcome.aborted = outcome.aborted or "locust overran its run time and was killed"
                    break
                elapsed = time.perf_counter() - t0
                past_cap = bool(scenario.requests) and elapsed > launch.warmup_s + budget.cap_s(budget.allowed)
                watch = bool(scenario.requests and not (outcome.aborted or outcome.capped)
                             and (abort_on or stop_on or not budget.final or past_cap))
                note = progress is not None and now >= next_note
                if watch or note:
                    measured, _ = samples_mod.split_warmup(samples_mod.merge_samples(samples_mod.sample_files(out_dir)))
                    if watch:
                        _judge_so_far(launch, outcome, measured, abort_on, extend_on, stop_on, past_cap)
                    if note:
                        progress(progress_line(scenario, measured, elapsed, launch.warmup_s,
                                               budget.cap_s(budget.allowed), planned=budget.allowed))
                        next_note = now + progress_every_s
                time.sleep(0.5)
            proc.wait(timeout=60)
        except BaseException:
            _kill(proc)
            raise
        finally:
            for helper in helpers:  # told to quit by the master; what is left after its end is killed
                try:
                    helper.wait(timeout=15 if proc.poll() is not None else 0)
                except subprocess.TimeoutExpired:
                    _kill(helper)
    outcome.returncode = proc.returncode
    return outcome


def _judge_so_far(launch: _Launch, outcome: _Outcome, measured: list[Sample], abort_on: list[Threshold],
                  extend_on: list[Threshold], stop_on: Callable[[list[Sample]], str] | None, past_cap: bool) -> None:
    """Decide on the samples so far: a gate lost or ``stop_on`` → aborted; past the cap → capped; else
    the budget steers (an extension while a gate is undecided). A stop writes the stop file."""
    budget = launch.budget
    why = (_lost(measured, abort_on, budget.allowed) or (stop_on(measured) if stop_on else "")
           or budget.steer(measured, extend_on))
    if why:
        outcome.aborted = f"stopped early: {why}"
    elif past_cap and len(measured) < budget.allowed:
        outcome.capped = (f"time cap reached: {budget.cap_s(budget.allowed):g} s for {budget.allowed} "
                          f"requests (max_run_s {launch.max_run_s:g} s per {launch.scenario.requests}), "
                          f"{len(measured)} done")
    if outcome.aborted or outcome.capped:
        log.warning("load %s: %s", launch.scenario.name, outcome.aborted or outcome.capped)
        (launch.out_dir / "stop").write_text(outcome.aborted or outcome.capped)  # the locustfile quits cleanly on it


def _collect(launch: _Launch, started_at: str, duration: float, outcome: _Outcome) -> LoadRun:
    """The run's samples merged (``samples.jsonl``), split from the warm-up, with Locust's own figures."""
    out_dir, scenario = launch.out_dir, launch.scenario
    merged = samples_mod.merge_samples(samples_mod.sample_files(out_dir), out_dir / samples_mod.MERGED)
    measured, warm = samples_mod.split_warmup(merged)
    log_text = (out_dir / "locust.log").read_text(errors="replace") if (out_dir / "locust.log").exists() else ""
    run = LoadRun(scenario, launch.host, out_dir, launch.workers.count if launch.workers else launch.processes,
                  launch.warmup_s, outcome.returncode, started_at, duration,
                  measured, warm, outcome.aborted, SATURATION_MARK in log_text, _locust_percentiles(out_dir),
                  planned=launch.budget.allowed if scenario.requests else 0, capped=outcome.capped,
                  extensions=launch.budget.extensions)
    if run.incomplete and not (run.aborted or run.capped):
        run.capped = (f"Locust's run time ({launch.run_time:g} s) ran out" if "--run-time limit reached" in log_text
                      else f"locust ended after {duration:g} s") + f" with {run.completed} of {run.planned} requests done"
    return run


def open_model_env(scenario: Scenario) -> dict[str, str]:
    """The open model's part of the locustfiles' environment (``load/_common.py``); {} for a closed loop."""
    if not scenario.open_model:
        return {}
    return {"LOAD_RATE": f"{scenario.rate:g}", "LOAD_ARRIVALS": scenario.arrivals, "LOAD_SEED": str(scenario.seed),
            "LOAD_MAX_IN_FLIGHT": str(scenario.users)}


def _lost(measured: list[Sample], gates: list[Threshold], allowed: int) -> str:
    """The first gate decided against, whatever the requests still to come do; "" when none is."""
    evidence = Evidence(measured, allowed, missing_failed=False)
    for th in gates:
        judged = evaluate(evidence, th)
        if judged.status is Status.FAIL:
            return f"{th} decided against ({judged.note or 'whatever the rest of the requests do'})"
    return ""


class Budget:
    """The request budget of a count-bounded run as the harness moves it (``budget`` file, module
    docstring): ``allowed`` requests so far, ``final`` once no extension will follow."""

    def __init__(self, scenario: Scenario, path: Path, max_run_s: float, extend: bool,
                 progress: Callable[[str], None] | None = None, contended: Callable[[], str] | None = None) -> None:
        self.scenario, self.path, self.max_run_s, self.progress = scenario, path, max_run_s, progress
        self.contended = contended
        self.allowed = scenario.requests
        self.most = max(scenario.budget, scenario.requests) if extend and scenario.requests else scenario.requests
        self.final = self.most <= self.allowed
        self.extensions: list[str] = []
        self._write()

    def cap_s(self, allowed: int) -> float:
        """The time cap for ``allowed`` requests: ``max_run_s`` per stated count, in proportion."""
        if not self.scenario.requests:
            return self.max_run_s
        return self.max_run_s * max(1.0, allowed / self.scenario.requests)

    def steer(self, measured: list[Sample], gates: list[Threshold]) -> str:
        """Make the budget final once every percentile gate is decided (other gates are decided by the
        allowed requests themselves); extend it while one is undecided and the allowed requests are
        (nearly) done, unless the box is contended. Never stops the run itself: returns ""."""
        if self.final:
            return ""
        evidence = Evidence(measured, self.allowed, missing_failed=False)
        undecided = [(th, evaluate(evidence, th)) for th in gates]
        undecided = [(th, j) for th, j in undecided if j.status is Status.INDETERMINATE]
        # only a percentile is decided by more requests (other gates are by the allowed ones coming in):
        # with every percentile decided, whatever the rest do, no extension will follow
        undecided = [(th, j) for th, j in undecided if th.decided_by_more]
        if not undecided:
            self.final = True
            self._write()
            return ""
        users = self.scenario.users
        if len(measured) < self.allowed - users:
            return ""  # the stated tickets are still going out: judge when they are nearly done
        busy = self.contended() if self.contended is not None else ""
        if busy:  # its gates cannot pass on this box: more requests would only take longer
            self.final = True
            self._write()
            self.extensions.append(f"not extended past {self.allowed}: the box is contended ({busy})")
            if self.progress is not None:
                self.progress(f"{self.scenario.name}: not extended, the box is contended: {busy}")
            return ""
        projected = [j.to_decide for _, j in undecided]
        want = self.most if None in projected else max(projected)
        if want <= self.allowed and len(measured) < self.allowed:
            return ""  # the samples so far say the allowed count decides it: wait for the last ones
        new = min(self.most, max(want, self.allowed + users))
        th, judged = undecided[0]
        lo, hi = judged.interval or (None, None)
        self.extensions.append(f"{self.allowed} -> {new}: {th} undecided at {len(measured)} requests "
                               f"(95 % interval {th.format_value(lo)} – {'∞' if hi is None else th.format_value(hi)})")
        log.info("load %s: extended to %d requests: %s", self.scenario.name, new, self.extensions[-1])
        if self.progress is not None:
            self.progress(f"{self.scenario.name}: extending to {new} requests (budget {self.most}) to decide: "
                          + self.extensions[-1].split(": ", 1)[1])
        self.allowed, self.final = new, new >= self.most
        self._write()
        return ""

    def _write(self) -> None:
        # read by the Locust processes while they run; worth nothing after a crash: atomic, no fsync
        write_json(self.path, {"allowed": self.allowed, "final": self.final}, indent=None, durable=False)


def _kill(proc: subprocess.Popen) -> None:
    """Kill Locust and its worker processes (the whole session it leads)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _locust_percentiles(out_dir: Path) -> dict[str, dict[str, float]]:
    """Locust's own (rounded, warm-up included) percentiles per row, from ``locust.json``; shown, never judged.

    Computed as Locust does from its rounded response-time histogram, with the "Aggregated" row
    summing every non-METRIC row.
    """
    path = out_dir / "locust.json"
    try:
        entries = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    out: dict[str, dict[str, float]] = {}
    total: dict[str, int] = {}
    for entry in entries:
        times = {float(k): int(v) for k, v in (entry.get("response_times") or {}).items()}
        out[entry.get("name", "")] = {f"p{p}": locust_percentile(times, p) for p in (50, 95, 99)}
        if entry.get("method") != "METRIC":
            for k, v in times.items():
                total[k] = total.get(k, 0) + v
    out["Aggregated"] = {f"p{p}": locust_percentile(total, p) for p in (50, 95, 99)}
    return out


def locust_percentile(histogram: dict[float, int], p: float) -> float:
    """Locust's ``calculate_response_time_percentile`` over its rounded histogram."""
    count = sum(histogram.values())
    allowed_above = int(count * p / 100)
    processed = 0
    for value in sorted(histogram, reverse=True):
        processed += histogram[value]
        if count - processed <= allowed_above:
            return value
    return 0.0

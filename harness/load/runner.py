"""Run one scenario: Locust headless in a subprocess, its outputs kept, raw samples merged.

Locust is never imported here: inside a Jupyter kernel its gevent monkey-patching hangs the kernel,
so it always runs as ``python -m locust`` in a child process. Outputs go to ``<out_dir>/``:
``locust_stats.csv`` (+ history, failures, exceptions; rewritten by Locust once a second), ``locust.html``, ``locust.json``,
``locust.log``, the per-process ``samples-<pid>.jsonl``, the merged ``samples.jsonl`` and
``scenario.json`` (the scenario as run).
"""

from __future__ import annotations

import json
import logging
import os
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
from harness.load.progress import progress_line
from harness.load.samples import Sample
from harness.load.scenarios import Scenario
from harness.load.thresholds import Threshold
from harness.result import now_iso
from suite.fsio import write_json
from suite.net import free_port

log = logging.getLogger(__name__)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SATURATION_MARK = "CPU usage above 90%"  # Locust's own warning when the generator is the bottleneck
SCENARIO_FILE = "scenario.json"  # the scenario as run (users, targets, ...), for later readers


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
    aborted: str = ""  # why the run was stopped early, if it was
    generator_saturated: bool = False
    locust_percentiles: dict[str, dict[str, float]] = field(default_factory=dict)

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


def locust_command(scenario: Scenario, host: str, out_dir: Path, processes: int, run_time_s: float,
                   loglevel: str = "INFO") -> list[str]:
    """The ``python -m locust`` command line of a headless run of ``scenario``."""
    cmd = [sys.executable, "-m", "locust", "-f", str(scenario.locustfile_path), "--headless",
           "-u", str(scenario.users), "-r", str(scenario.spawn_rate), "-t", f"{int(max(1, run_time_s))}s",
           "--host", host, "--csv", str(out_dir / "locust"), "--html", str(out_dir / "locust.html"),
           "--json-file", str(out_dir / "locust"), "--only-summary", "--exit-code-on-error", "0",
           "--stop-timeout", "30", "--loglevel", loglevel, "--logfile", str(out_dir / "locust.log")]
    if processes > 1:
        port = free_port()  # not 5557: several runs (tests, engineers) may share this box
        cmd += ["--processes", str(processes), "--master-bind-host", "127.0.0.1",
                "--master-bind-port", str(port), "--master-port", str(port)]
    return cmd


def run_scenario(scenario: Scenario, host: str, out_dir: Path, *, processes: int = 1, warmup_s: float = 0.0,
                 abort_on: list[Threshold] | None = None, phase: int = 1, max_run_s: float = 300.0,
                 allow_remote: bool = False, extra_env: dict[str, str] | None = None,
                 progress: Callable[[str], None] | None = None, progress_every_s: float = 5.0) -> LoadRun:
    """Run ``scenario`` against ``host`` and return its samples; never raises for a bad result.

    The stop condition is the scenario's request count and/or duration; ``max_run_s`` caps a
    count-bounded run. With ``abort_on``, a count-bounded run is stopped (through a stop file the
    locustfile watches, so Locust still writes its reports) as soon as one of those thresholds can
    no longer pass. ``progress`` gets a line every ``progress_every_s`` (requests so far, failures,
    current p95, rate, ETA) computed from the samples written so far. The scenario as run goes to
    ``scenario.json`` beside the samples.
    """
    host = check_host(host, allow_remote)
    if not scenario.locustfile_path.is_file():
        raise LoadError(f"locustfile {scenario.locustfile_path} of scenario {scenario.name!r} does not exist")
    if processes < 1:
        raise LoadError(f"processes must be >= 1 (got {processes})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*samples_mod.sample_files(out_dir), out_dir / samples_mod.MERGED, out_dir / "stop"]:
        old.unlink(missing_ok=True)  # a rerun into the same folder must not mix in old samples
    run_time = (scenario.duration_s or max_run_s) + warmup_s
    cmd = locust_command(scenario, host, out_dir, processes, run_time)
    write_json(out_dir / SCENARIO_FILE,
               {**asdict(scenario), "host": host, "processes": processes, "warmup_s": warmup_s, "phase": phase})
    env = {**os.environ, "LOAD_SAMPLES_DIR": str(out_dir), "LOAD_REQUESTS": str(scenario.requests),
           "LOAD_WARMUP_S": str(warmup_s), "LOAD_MAX_TOKENS": str(scenario.max_tokens),
           "LOAD_PHASE": str(phase), "LOAD_STOP_FILE": str(out_dir / "stop"), **(extra_env or {})}
    log.info("load %s: %s", scenario.name, " ".join(cmd))
    started_at, t0 = now_iso(), time.perf_counter()
    aborted = ""
    with open(out_dir / "locust.out", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(out_dir),
                                start_new_session=True)
        deadline = time.monotonic() + run_time + 60  # Locust's own -t plus time to write reports
        next_note = time.monotonic() + progress_every_s
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if now > deadline:
                    log.error("load %s: locust did not stop in time; killing it", scenario.name)
                    _kill(proc)
                    aborted = aborted or "locust overran its run time and was killed"
                    break
                watch = bool(abort_on and not aborted and scenario.requests)
                note = progress is not None and now >= next_note
                if watch or note:
                    measured, _ = samples_mod.split_warmup(samples_mod.merge_samples(samples_mod.sample_files(out_dir)))
                    lost = next((str(th) for th in abort_on or [] if watch
                                 and stats.already_lost(measured, th, scenario.requests)), "")
                    if lost:
                        aborted = f"stopped early: {lost} can no longer pass"
                        log.warning("load %s: %s", scenario.name, aborted)
                        (out_dir / "stop").write_text(aborted)  # the locustfile quits cleanly on it
                    if note:
                        progress(progress_line(scenario, measured, time.perf_counter() - t0, warmup_s, max_run_s))
                        next_note = now + progress_every_s
                time.sleep(0.5)
            proc.wait(timeout=60)
        except BaseException:
            _kill(proc)
            raise
    duration = round(time.perf_counter() - t0, 2)
    merged = samples_mod.merge_samples(samples_mod.sample_files(out_dir), out_dir / samples_mod.MERGED)
    measured, warm = samples_mod.split_warmup(merged)
    log_text = (out_dir / "locust.log").read_text(errors="replace") if (out_dir / "locust.log").exists() else ""
    return LoadRun(scenario, host, out_dir, processes, warmup_s, proc.returncode, started_at, duration,
                   measured, warm, aborted, SATURATION_MARK in log_text, _locust_percentiles(out_dir))


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

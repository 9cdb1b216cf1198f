"""A runbook's load plan: select scenarios, apply overrides, skip those outside the phase, run the rest.

Heavy scenarios (those that generate tokens) run one at a time, so each is measured on a box that is
not also serving another heavy scenario; ``light`` ones (see ``scenarios``) run beside the last heavy
one, which overlaps their minute of mostly-waiting with it instead of adding it to the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from harness.load import runner, server_view, verdicts
from harness.load.runner import LoadRun
from harness.load.scenarios import Scenario, profile_scenarios, select_scenarios, with_overrides
from harness.result import CheckResult
from suite import services
from suite.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ScenarioOutcome:
    scenario: Scenario
    run: LoadRun | None  # None when skipped
    results: list[CheckResult] = field(default_factory=list)


def plan(names: str, *, profile: str = "seed", users: int = 0, spawn_rate: float = 0.0, requests: int = 0,
         duration_s: float = 0.0, thresholds: str = "", max_tokens: int = 0) -> list[Scenario]:
    """The selected scenarios (empty ``names``: the profile's) with overrides applied; raises on
    unknown names or bad thresholds."""
    chosen = select_scenarios(names) if names.strip() else select_scenarios(profile_scenarios(profile))
    return [with_overrides(s, users=users, spawn_rate=spawn_rate, requests=requests, duration_s=duration_s,
                           thresholds=thresholds, max_tokens=max_tokens) for s in chosen]


def run_plan(scenarios: list[Scenario], settings: Settings, load_dir: Path, *, phase: int = 1,
             processes: int = 1, warmup_s: float = 0.0, abort_on_fail: bool = False,
             max_run_s: float = 300.0, base: Path | None = None, overlap: bool = True,
             progress: Callable[[str], None] | None = None) -> Iterator[ScenarioOutcome]:
    """Run the scenarios and yield each one's verdicts as it finishes (see the module docstring)."""
    runnable = []
    for sc in scenarios:
        if sc.phase > phase:
            reason = f"service {sc.service} starts in phase {sc.phase}; this run is phase {phase}"
            yield ScenarioOutcome(sc, None, [verdicts.skipped(sc, reason)])
        else:
            runnable.append(sc)

    def one(sc: Scenario) -> ScenarioOutcome:
        targets = sc.targets()
        extra_env = load_env(settings, sc.service)  # before the watch: its setup is not load
        gpu = settings.profile == "gpu"
        with server_view.Watch(settings, [s.name for s in services.for_phase(phase)], gpu=gpu) as watch:
            run = runner.run_scenario(sc, settings.url(sc.service), Path(load_dir) / sc.name, processes=processes,
                                      warmup_s=warmup_s, abort_on=targets if abort_on_fail else None,
                                      phase=phase, max_run_s=max_run_s, extra_env=extra_env, progress=progress)
        results = verdicts.judge(run, targets, base, sc.figures())
        results.append(server_view.record(sc, run, watch, base))
        if gpu:
            results.append(server_view.gpu_memory(sc, run, watch))
        return ScenarioOutcome(sc, run, results)

    light = [sc for sc in runnable if overlap and sc.light]
    heavy = [sc for sc in runnable if sc not in light]
    for sc in heavy[:-1]:
        yield one(sc)
    together = heavy[-1:] + light
    if len(together) <= 1:
        yield from (one(sc) for sc in together)
        return
    if progress and light:
        progress(f"running {', '.join(s.name for s in light)} beside {', '.join(s.name for s in heavy[-1:]) or 'each other'}")
    pool = ThreadPoolExecutor(max_workers=len(together), thread_name_prefix="load")
    futures = [pool.submit(one, sc) for sc in together]
    try:
        for future in as_completed(futures):
            yield future.result()
    except BaseException:
        for sc in together:  # an interrupted kernel: every locustfile still running quits on its stop file
            stop = Path(load_dir) / sc.name / "stop"
            if stop.parent.is_dir():
                stop.write_text("interrupted")
        raise
    finally:
        pool.shutdown(wait=True)


def tools_env(settings: Settings) -> dict[str, str]:
    """A file to read for the tools scenario, written with the run's admin key (harness.keys)."""
    from harness.keys import headers_for

    path = "load/target.txt"
    resp = httpx.post(f"{settings.url('tools')}/tools/write_file", timeout=30,
                      json={"path": path, "content": "load test target\n" * 64, "create_dirs": True},
                      headers=headers_for(settings, "admin"))
    resp.raise_for_status()
    return {"LOAD_TOOLS_FILE": path}


def load_env(settings: Settings, service: str) -> dict[str, str]:
    """What Locust gets for a scenario: the run's developer key as ``LOAD_API_KEY`` (the RAG scenario
    indexes first; every other one needs no more than a guest), plus the tools scenario's file."""
    from harness.keys import run_keys

    env = {"LOAD_API_KEY": run_keys(settings).developer}
    if service == "tools":
        env.update(tools_env(settings))
    return env


"""A runbook's load plan: select scenarios, apply overrides, skip those outside the phase, run the rest.

A plan runs in stages (``scenarios``: a profile's stages, or for scenarios named one by one each heavy
one alone, the light ones together after them); the scenarios of a stage run at the same time. Each
scenario is judged on its own samples (``verdicts``), extended while a gate is undecided and stopped
early only when one is decided against (``runner``), with the box it ran on beside its gates: a CPU
benchmark before each stage and CPU steal and outside CPU sampled every second while it runs
(``harness.envcheck.contention``). The server-side view compares a service's request count with
the client's only where one scenario of the stage reaches that service; where several enter the same
service together (``seed-50x3`` and ``seed-20x2`` at the gateway, with ``overlap``) one more line
compares the sum.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx

from harness.envcheck.contention import OUTSIDE_PCT, Benchmark, CpuWatch, cpu_benchmark, our_roots
from harness.httpclient import verify
from harness.load import runner, server_view, verdicts
from harness.load.runner import LoadRun
from harness.load.scenarios import Scenario, named_stages, profile_stages, select_scenarios, with_overrides
from harness.result import CheckResult
from harness.target import Part, Target
from harness.target import secret as target_secret
from suite import services
from suite.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ScenarioOutcome:
    scenario: Scenario
    run: LoadRun | None  # None when skipped (or for the server-side view of scenarios run together)
    results: list[CheckResult] = field(default_factory=list)
    name: str = ""  # what finished, as in its results' ids (load.<name>.*): the scenario's unless said

    def __post_init__(self) -> None:
        self.name = self.name or self.scenario.name


class LoadPlan(list):
    """The selected scenarios (a list, in running order) and the stages they run in."""

    def __init__(self, stages: list[list[Scenario]]) -> None:
        super().__init__(sc for stage in stages for sc in stage)
        self.stages = stages

    def describe(self) -> str:
        """``seed-100x5 (100 requests at 5 users) + tools (...), then ...``"""
        return ", then ".join(" + ".join(f"{s.name} ({s.stop_condition()} {s.pace()})" for s in stage)
                              for stage in self.stages)


def plan(names: str, *, profile: str = "seed", users: int = 0, spawn_rate: float = 0.0, requests: int = 0,
         duration_s: float = 0.0, thresholds: str = "", max_tokens: int = 0, overlap: bool = False,
         slo: str = "", rate: float = 0.0, arrivals: str = "", seed: int | None = None) -> LoadPlan:
    """The selected scenarios (empty ``names``: the profile's stages) with overrides applied; raises
    on unknown names or bad thresholds. ``overlap``: the shorter plan whose stages run scenarios
    side by side (``harness.load.scenarios``); ``rate`` turns each into an open model."""
    if names.strip():
        named = [s.name for s in select_scenarios(names)]
        stages = named_stages(list(dict.fromkeys(named)), overlap)
    else:
        stages = profile_stages(profile, overlap)
    return LoadPlan([[with_overrides(s, users=users, spawn_rate=spawn_rate, requests=requests,
                                     duration_s=duration_s, thresholds=thresholds, max_tokens=max_tokens,
                                     slo=slo, rate=rate, arrivals=arrivals, seed=seed)
                      for s in select_scenarios(stage)] for stage in stages])


def run_plan(scenarios: list[Scenario], settings: Settings, load_dir: Path, *, phase: int = 1,
             processes: int = 1, warmup_s: float = 0.0, abort_on_fail: bool = False,
             max_run_s: float = 300.0, base: Path | None = None, extend: bool = True,
             outside_cpu_limit_pct: float = OUTSIDE_PCT, benchmark: bool = True,
             progress: Callable[[str], None] | None = None, target: Target | None = None,
             workers: runner.Workers | None = None) -> Iterator[ScenarioOutcome]:
    """Run the plan stage by stage and yield each scenario's verdicts as it finishes (module
    docstring). A plain list runs as ``named_stages``. ``extend``: a count-bounded scenario may grow
    to its budget while a gate is undecided; ``outside_cpu_limit_pct``: the share of the box's CPU
    outside processes may take before its gates cannot pass; ``benchmark``: run the CPU benchmark
    before each stage; ``workers``: every scenario as a distributed run (``runner.Workers``). ``target``:
    a stack from a target file (``harness.target``): each scenario
    runs against its role's part with its model names and key, where the target allows load on it
    (``allow_load``; beyond loopback only a host ``allow_remote_hosts`` names); the server-side view
    reads our own services' counters only."""
    ours = target is None or target.ours
    if isinstance(scenarios, LoadPlan):
        stages = scenarios.stages
    else:
        by_name = {sc.name: sc for sc in scenarios}
        stages = [[by_name[n] for n in stage] for stage in named_stages(list(by_name))]
    names = [s.name for s in services.for_phase(phase)] if ours else []
    gpu = settings.profile == "gpu" and ours
    roots = None if ours else our_roots(settings, target)  # a target's loopback parts are the stack

    def one(sc: Scenario, stage: list[Scenario], bench: Benchmark | None) -> ScenarioOutcome:
        targets = sc.targets()
        # before the watches: its setup is not load
        extra_env = load_env(settings, sc) if ours else target_env(target, sc)
        host = settings.url(sc.service) if ours else part_for(target, sc.service).base_url
        beside = [o.name for o in stage if o is not sc]
        with CpuWatch(settings, benchmark=bench, outside_limit_pct=outside_cpu_limit_pct, roots=roots) as box, \
                server_view.MetricsSampler(settings, names, gpu=gpu, engines=server_view.engines_of(sc)) as watch:
            run = runner.run_scenario(sc, host, Path(load_dir) / sc.name, processes=processes,
                                      warmup_s=warmup_s, abort_on=targets if abort_on_fail else None,
                                      extend_on=targets if extend else None, phase=phase, max_run_s=max_run_s,
                                      # a target's parts, or a service the operator placed on another host
                                      allow_remote=not ours or sc.service in settings.urls, extra_env=extra_env,
                                      progress=progress, contended=box.contended, workers=workers)
        reading = box.reading()
        results = verdicts.judge(run, targets, base, sc.figures(), box=reading, beside=beside)
        if ours:
            shared = server_view.sharing(stage).get(sc.name, [])
            results.append(server_view.record(sc, run, watch, base, shared_with=shared))
        if gpu:
            results.append(server_view.gpu_memory(sc, run, watch))
        return ScenarioOutcome(sc, run, results)

    for stage in stages:
        runnable = []
        for sc in stage:
            reason = (f"service {sc.service} starts in phase {sc.phase}; this run is phase {phase}"
                      if sc.phase > phase else "") if ours else target_refusal(target, sc)
            if reason:
                yield ScenarioOutcome(sc, None, [verdicts.skipped(sc, reason)])
            else:
                runnable.append(sc)
        if not runnable:
            continue
        bench = cpu_benchmark() if benchmark else None  # the box just before the stage, its stack idle
        if len(runnable) == 1:
            yield one(runnable[0], runnable, bench)
        else:
            yield from _together(runnable, partial(one, stage=runnable, bench=bench), settings, load_dir, base,
                                 progress)


def _together(stage: list[Scenario], one: Callable, settings: Settings, load_dir: Path, base: Path | None,
              progress: Callable[[str], None] | None) -> Iterator[ScenarioOutcome]:
    """The scenarios of one stage at the same time; then, for a service several of them entered, the
    server's count against their clients' sum (taken over the whole stage)."""
    groups = server_view.entry_groups(stage)
    if progress:
        progress("running together: " + ", ".join(sc.name for sc in stage))
    pool = ThreadPoolExecutor(max_workers=len(stage), thread_name_prefix="load")
    outcomes: list[ScenarioOutcome] = []
    try:
        # before/after of the shared services only: each scenario's own MetricsSampler samples the engines
        with server_view.MetricsSampler(settings, list(groups)) as stage_watch:
            futures = [pool.submit(one, sc) for sc in stage]
            for future in as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                yield outcome
    except BaseException:
        for sc in stage:  # an interrupted kernel: every locustfile still running quits on its stop file
            stop = Path(load_dir) / sc.name / "stop"
            if stop.parent.is_dir():
                stop.write_text("interrupted")
        raise
    finally:
        pool.shutdown(wait=True)
    for service, members in groups.items():
        runs = [(o.scenario, o.run) for o in outcomes if o.scenario.name in members and o.run is not None]
        if runs:
            result = server_view.record_group(service, runs, stage_watch, base)
            yield ScenarioOutcome(runs[-1][0], None, [result], name="+".join(sc.name for sc, _ in runs))


ROLE_OF_SERVICE = {"gateway": "gateway", "embedding": "embedding", "rag": "rag", "tools": "mcp"}
SUITE_CONTRACT = {"rag_query.py": "the suite's /index and /query", "tools_read_file.py": "the suite's REST tools",
                  "mixed.py": "the suite's services together", "health_ceiling.py": "the load generator's own ceiling"}


def part_for(target: Target, service: str) -> Part | None:
    """The target's part a scenario's service stands for (gateway, embedding, RAG, MCP)."""
    return getattr(target, ROLE_OF_SERVICE.get(service, service), None)


def target_refusal(target: Target, sc: Scenario) -> str:
    """Why a scenario does not run against a target file's stack ("" when it does)."""
    role = ROLE_OF_SERVICE.get(sc.service, sc.service)
    part = part_for(target, sc.service)
    if part is None:
        return target.missing(role)
    if sc.locustfile in SUITE_CONTRACT:
        return f"not applicable: {sc.name} speaks {SUITE_CONTRACT[sc.locustfile]}; {part.name} is {part.kind}"
    if not part.allow_load:
        return f"not allowed: {part.name} has allow_load = false in the target (read-only by default)"
    if not target.remote_allowed(part):
        return (f"not allowed: {part.name} is on {part.host}, beyond loopback; load reaches it only when "
                f"allow_remote_hosts names {part.host}")
    return ""


def target_env(target: Target, sc: Scenario) -> dict[str, str]:
    """What Locust gets against a target file's part: its key in its own header, the gateway's model
    names, the embedding server's model (OpenAI ``/v1/embeddings``)."""
    part = part_for(target, sc.service)
    env = {"LOAD_CHAT_MODEL": target.gateway.chat_model if target.gateway else "chat",
           "LOAD_CODE_MODEL": target.gateway.code_model if target.gateway else "code"}
    if part is not None and part.auth is not None:
        env.update(LOAD_API_KEY=target_secret(target, part, "guest") or "", LOAD_AUTH_HEADER=part.auth.header,
                   LOAD_AUTH_SCHEME=part.auth.scheme)
    if sc.service == "embedding" and part is not None and part.kind != "suite":
        env["LOAD_EMBED_MODEL"] = (part.models or ["embedding"])[0]
    return env


def tools_env(settings: Settings) -> dict[str, str]:
    """A file to read for the tools scenario, written with the run's admin key (harness.keys)."""
    from harness.keys import headers_for

    path = "load/target.txt"
    resp = httpx.post(f"{settings.url('tools')}/tools/write_file", timeout=30, verify=verify(settings),
                      json={"path": path, "content": "load test target\n" * 64, "create_dirs": True},
                      headers=headers_for(settings, "admin"))
    resp.raise_for_status()
    return {"LOAD_TOOLS_FILE": path}


def load_env(settings: Settings, scenario: Scenario) -> dict[str, str]:
    """What Locust gets for a scenario: the run's developer key as ``LOAD_API_KEY`` (the RAG scenario
    indexes first; every other one needs no more than a guest), plus the tools scenario's file.

    The tools scenario gets a guest key minted for it (``read_file`` needs no more; owned by the run,
    revoked with it): the tool server's budget is per key and minute, so a fresh key's budget is the
    scenario's alone, whatever the runbooks before it called, and it may go faster than a shared key
    could (``tools_pace``)."""
    from harness.keys import make_key, run_keys

    keys = run_keys(settings)
    env = {"LOAD_API_KEY": keys.developer}
    if scenario.service == "tools":
        env.update(tools_env(settings))
        env["LOAD_API_KEY"] = make_key(settings, "guest", f"run {keys.run_id} tools load",
                                       settings.auth.run_key_ttl_s, keys.run_id)
        env["LOAD_TOOLS_RPS"] = str(tools_pace(settings, scenario))
    return env


def tools_pace(settings: Settings, scenario: Scenario, within_s: float = 10.0) -> float:
    """Calls per second per tools user for a key of its own. The scenario's calls (its requests or the
    budget it may extend to, plus warm-up and those still in flight at its end) are spread over ``within_s`` when they all fit in
    80 % of the key's per-minute budget; otherwise the pace is 80 % of the budget, so the limiter is
    never what the scenario measures."""
    budget = 0.8 * settings.tools.rate_limit_per_minute
    calls = (max(scenario.requests, scenario.budget) or budget) + 4 * scenario.users  # extended to its budget
    per_s = calls / within_s if calls <= budget else budget / 60
    return math.floor(per_s / scenario.users * 1000) / 1000  # rounded down: never above the budget

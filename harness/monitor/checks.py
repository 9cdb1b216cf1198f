"""What the monitoring runbook records: the stack started, every target UP, the rules loaded,
request rate and p95 per service through PromQL after traffic, and the gateway's PromQL p95 beside
the client's exact p95 of the same requests. The alert drill is ``harness.monitor.drill``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from harness import stack as suite_stack
from harness.httpclient import verify
from harness.load import stats
from harness.load.runner import LoadRun
from harness.monitor import api, promtool
from harness.monitor.prometheus import MonitorStack, MonitorStackError
from harness.monitor.rules import alert_names
from harness.result import CheckResult, Stage, Status, now_iso, timed
from suite import services
from suite.fsio import write_atomic
from suite.settings import Settings

STAGE = Stage.MONITORING
Echo = Callable[[str], None]


def running_services(settings: Settings, phase: int) -> list[str]:
    """Services of the phase that the suite CLI reports running (``suite status``)."""
    running = suite_stack.running(settings)
    return [s.name for s in services.for_phase(phase) if s.name in running]


def check_binaries() -> CheckResult:
    absent = promtool.missing("prometheus", "promtool", "alertmanager")
    if absent:
        return promtool.skipped("monitor.binaries", "Prometheus, promtool, Alertmanager installed", absent)
    versions = [promtool.version(t) for t in ("prometheus", "alertmanager")]
    return CheckResult("monitor.binaries", "Prometheus, promtool, Alertmanager installed", STAGE, Status.PASS,
                       target="installed", measured="; ".join(v.split(" (")[0] for v in versions))


def start(stack: MonitorStack) -> CheckResult:
    """Start Prometheus and Alertmanager; a skip (with the hint) when they are not installed."""
    absent = promtool.missing("prometheus", "alertmanager")
    if absent:
        return promtool.skipped("monitor.stack", "Prometheus and Alertmanager started", absent)
    with timed() as t:
        try:
            stack.start()
        except MonitorStackError as exc:
            return CheckResult("monitor.stack", "Prometheus and Alertmanager started", STAGE, Status.FAIL,
                               target="both ready on loopback", measured="not started", detail=str(exc),
                               **t.fields())
    return CheckResult("monitor.stack", "Prometheus and Alertmanager started", STAGE, Status.PASS,
                       target="both ready on loopback", measured=f"{stack.prometheus}, {stack.alertmanager}",
                       evidence=[str(p) for p in stack.files.values()],
                       detail=f"scrape every {stack.timing.scrape_interval}, alerts `for:` "
                              f"{stack.for_override or 'as shipped'}, webhook {stack.sink.url if stack.sink else '-'}",
                       **t.fields())


def check_targets_up(stack: MonitorStack, deadline_s: float = 30.0) -> CheckResult:
    """Every running service is a target, and every target is UP (waits for the first scrapes)."""
    expected = set(stack.services) | ({"qdrant"} if stack.settings.rag.qdrant_url else set())
    state: dict[str, str] = {}

    def all_up() -> bool:
        state.clear()
        for t in api.targets(stack.prometheus):
            state[t["labels"].get("service", "?")] = "up" if t["health"] == "up" else \
                f"{t['health']} ({t.get('lastError') or 'not scraped yet'})"
        return set(state) >= expected and all(v == "up" for v in state.values())

    with timed() as t:
        ok, took = api.wait_for(all_up, deadline_s)
    down = {k: v for k, v in state.items() if v != "up"}
    missing = sorted(expected - set(state))
    up = len(state) - len(down)
    return CheckResult("monitor.targets", "Every running service is a Prometheus target and UP", STAGE,
                       Status.PASS if ok else Status.FAIL, target=f"{len(expected)} targets UP",
                       measured=f"{up}/{len(expected)} UP after {took:.1f}s",
                       detail="; ".join([*(f"{k}: {v}" for k, v in sorted(down.items())),
                                         *(f"{m}: not a target" for m in missing)]) or ", ".join(sorted(state)),
                       **t.fields())


def check_rules_loaded(stack: MonitorStack) -> CheckResult:
    """Every alert the settings call for is loaded and evaluates without error."""
    expected = alert_names(stack.settings)
    with timed() as t:
        loaded = {r["name"]: r for r in api.rules(stack.prometheus) if r.get("type") == "alerting"}
    missing = [n for n in expected if n not in loaded]
    broken = [f"{n}: {r.get('lastError')}" for n, r in loaded.items() if r.get("health") not in ("ok", "unknown")]
    ok = not missing and not broken
    return CheckResult("monitor.rules.loaded", "Alert rules loaded in Prometheus", STAGE,
                       Status.PASS if ok else Status.FAIL, target=f"{len(expected)} alert rules, healthy",
                       measured=f"{len(loaded)} loaded", evidence=[str(stack.files.get("rules", ""))],
                       detail="; ".join([*(f"missing {m}" for m in missing), *broken]) or ", ".join(loaded),
                       **t.fields())


def probe_traffic(settings: Settings, names: list[str], per_service: int) -> int:
    """``/ready`` of every service ``per_service`` times: a real tiny operation each, so every target
    has requests for the PromQL checks. Returns the number of answers."""
    answered = 0
    with httpx.Client(timeout=60, verify=verify()) as client:
        for _ in range(per_service):
            for name in names:
                try:
                    client.get(settings.url(name) + services.get(name).ready_path)
                    answered += 1
                except httpx.HTTPError:
                    pass
    return answered


def window(since: float, stack: MonitorStack) -> str:
    """A PromQL range covering everything since ``since`` (epoch seconds) and two scrapes before it."""
    step = float(stack.timing.scrape_interval.rstrip("s"))
    return f"{int(time.time() - since + 2 * step) + 1}s"


def check_promql_per_service(stack: MonitorStack, since: float) -> list[CheckResult]:
    """Request rate and p95 latency of each service over the traffic window, through PromQL."""
    rng = window(since, stack)
    rate_q = f'sum by (service) (rate(http_requests_total{{job="suite"}}[{rng}]))'
    p95_q = ("histogram_quantile(0.95, sum by (service, le) "
             f'(rate(http_request_duration_seconds_bucket{{job="suite"}}[{rng}])))')
    started = now_iso()
    rates = {m.get("service"): v for m, v in api.query(stack.prometheus, rate_q)}
    p95s = {m.get("service"): v for m, v in api.query(stack.prometheus, p95_q)}
    out = []
    for name in stack.services:
        rate, p95 = rates.get(name, 0.0), p95s.get(name)
        ok = rate > 0 and p95 is not None
        out.append(CheckResult(
            f"monitor.promql.{name}", f"{name}: request rate and p95 through PromQL", STAGE,
            Status.PASS if ok else Status.FAIL, target="requests seen, p95 computed",
            measured=f"{rate:.2f} req/s, p95 {p95 * 1000:.0f} ms" if p95 is not None else f"{rate:.2f} req/s, no p95",
            detail=f"over the last {rng}: {rate_q} | {p95_q}", started_at=started))
    return out


def settle(stack: MonitorStack, scrapes: int = 2) -> None:
    """Let Prometheus scrape what just happened (``scrapes`` intervals) before querying it."""
    time.sleep(scrapes * float(stack.timing.scrape_interval.rstrip("s")))


def traffic_and_promql(stack: MonitorStack, probes: int, completions: int, phase: int,
                       out_dir: Path) -> list[CheckResult]:
    """``/ready`` of every service ``probes`` times and ``completions`` code completions through the
    gateway (Locust, raw samples); then rate and p95 per service and the gateway's p95 beside the
    client's, through PromQL."""
    from harness.load import plan, run_scenario
    from harness.load.plan import load_env

    # A labelled series born during the window has no earlier sample, so rate() cannot count its
    # first requests: one round first creates every /ready series, the window starts after a scrape.
    probe_traffic(stack.settings, stack.services, 1)
    settle(stack, 1)
    since = time.time()
    probe_traffic(stack.settings, stack.services, probes)
    run = None
    if "gateway" in stack.services and completions > 0:
        scenario = plan("code", requests=completions)[0]
        run = run_scenario(scenario, stack.settings.url("gateway"), out_dir, phase=phase, max_run_s=120,
                           extra_env=load_env(stack.settings, scenario))  # the run's key
    settle(stack)
    results = check_promql_per_service(stack, since)
    if run is not None:
        results.append(check_p95_agreement(stack, run, since))
    return results


def not_run(reason: str, drill_service: str = "") -> list[CheckResult]:
    """The stack-dependent steps as ``skip`` with the reason (the install hint when binaries are absent)."""
    steps = [("monitor.targets", "Every running service is a Prometheus target and UP"),
             ("monitor.rules.loaded", "Alert rules loaded in Prometheus"),
             ("monitor.promql", "Request rate and p95 per service through PromQL")]
    if drill_service:
        steps.append(("monitor.alert.fires", f"ServiceDown fires for a stopped {drill_service}"))
    return [CheckResult.skipped(cid, title, STAGE, target="Prometheus running", measured="not run",
                        detail=reason) for cid, title in steps]


def log_paths(settings: Settings, phase: int, copy_dir: Path) -> dict[str, Path]:
    """Each service's log: the process backend's files in the data dir as they are; other backends'
    (compose keeps them) copied through ``suite logs`` into ``copy_dir``."""
    names = [s.name for s in services.for_phase(phase)]
    if settings.backend == "process":
        return {n: settings.log_dir / f"{n}.log" for n in names}
    copy_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        proc = suite_stack.run_suite(["logs", name, "-n", "1000000"], settings, timeout=300)
        out[name] = copy_dir / f"{name}.log"
        if proc.returncode == 0:
            write_atomic(out[name], proc.stdout)
    return out


def bucket_index(bounds: list[float], value: float) -> int:
    """Index of the histogram bucket (upper bounds ascending) that holds ``value``."""
    return next((i for i, b in enumerate(bounds) if value <= b), len(bounds))


def check_p95_agreement(stack: MonitorStack, run: LoadRun, since: float, service: str = "gateway",
                        route: str = "/v1/completions") -> CheckResult:
    """The gateway's p95 from its histogram (PromQL) beside the client's exact p95 of the same
    requests: they agree when they fall in the same or a neighbouring histogram bucket (a
    histogram only knows which bucket a request fell in)."""
    rng = window(since, stack)
    sel = f'service="{service}",route="{route}"'
    buckets = api.query(stack.prometheus, f"sum by (le) (rate(http_request_duration_seconds_bucket{{{sel}}}[{rng}]))")
    bounds = sorted(float(m["le"]) for m, _ in buckets if m.get("le") not in (None, "+Inf"))
    server = api.query(stack.prometheus, "histogram_quantile(0.95, sum by (le) "
                                         f"(rate(http_request_duration_seconds_bucket{{{sel}}}[{rng}])))")
    client = stats.percentile([s.ms for s in run.samples], 95)
    title = f"{service} {route}: PromQL p95 beside the client's p95"
    if client is None or not server or not bounds:
        return CheckResult(f"monitor.p95.{service}", title, STAGE, Status.FAIL, target="both measured",
                           measured=f"client {client} ms, server {server[0][1] if server else 'none'}",
                           detail=f"{len(run.samples)} client samples; histogram buckets: {len(bounds)}")
    server_ms = server[0][1] * 1000
    gap = abs(bucket_index(bounds, server_ms / 1000) - bucket_index(bounds, client / 1000))
    return CheckResult(
        f"monitor.p95.{service}", title, STAGE, Status.PASS if gap <= 1 else Status.WARN,
        target="same or neighbouring histogram bucket", measured=f"PromQL {server_ms:.0f} ms, client {client:.0f} ms",
        detail=f"{len(run.samples)} requests; buckets apart: {gap}; PromQL interpolates inside a bucket "
               f"(bounds {', '.join(f'{b:g}' for b in bounds)} s); the client's time includes its own network "
               "and parsing", evidence=[str(run.samples_file)])

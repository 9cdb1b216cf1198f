"""The server-side view of a load scenario: every service's ``/metrics`` scraped before and after
it (the inference engines' gauges sampled while it runs), reported beside the client's figures.

Per scenario: requests the target service counted (``/ready`` probes left out) by status class,
429s, the server's latency percentiles from its histogram; per inference service: the longest
waiting line, the most slots busy, time to first token from the engine's histogram, tokens and
rejections, and the prefix cache's hit ratio (the share of prompt tokens whose KV cells were reused
instead of prefilled, and how many prompts started from a cached prefix); per service: CPU seconds
used and resident memory. A difference between what the client
sent and what the server counted is a warning: requests lost on the way, or counted twice.
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.envcheck.gpu import GpuUnavailable, read_gpus
from harness.load import stats
from harness.load.runner import LoadRun
from harness.load.scenarios import Scenario
from harness.load.scrape import Snapshot, bucket_deltas, delta, maxima, quantile, scrape_all
from harness.load.verdicts import rel_path
from harness.result import CheckResult, Stage, Status
from suite.fsio import write_json
from suite.settings import Settings

STAGE = Stage.LOAD
INFERENCE = ("inference-chat", "inference-code")
# locustfiles whose requests the host's request counter cannot match one to one
NOT_COMPARED = {"mixed.py": "calls several services", "health_ceiling.py": "/health is not counted as a request"}
# the services each locustfile's requests reach (the target and what it calls on their behalf)
REACHES = {"gateway_code.py": {"gateway", "inference-code"}, "gateway_chat_stream.py": {"gateway", "inference-chat"},
           "rag_query.py": {"rag", "embedding", "gateway", "inference-chat"}, "embedding.py": {"embedding"},
           "tools_read_file.py": {"tools"}, "health_ceiling.py": {"gateway"},
           "mixed.py": {"gateway", "inference-chat", "inference-code", "embedding", "rag"}}
PROBES = "/ready"  # readiness probes by supervisors are not load
HTTP_STATUS = re.compile(r"HTTP (\d{3})")


def reaches(scenario: Scenario) -> set[str]:
    return REACHES.get(scenario.locustfile, set()) | {scenario.service}


def engines_of(scenario: Scenario) -> list[str]:
    """The inference services a scenario's requests reach: whose gauges its MetricsSampler samples."""
    return [n for n in INFERENCE if n in reaches(scenario)]


def sharing(stage: list[Scenario]) -> dict[str, list[str]]:
    """For each scenario of a stage, the others that also reach its target service."""
    out = {sc.name: [o.name for o in stage if o is not sc and sc.service in reaches(o)] for sc in stage}
    return {name: others for name, others in out.items() if others}


def entry_groups(stage: list[Scenario]) -> dict[str, list[str]]:
    """Services that several scenarios of a stage enter and nothing else of the stage reaches: their
    count is compared with the sum of those scenarios' clients."""
    groups: dict[str, list[str]] = {}
    for service in dict.fromkeys(sc.service for sc in stage):
        members = [sc for sc in stage if sc.service == service]
        others = [sc for sc in stage if sc.service != service and service in reaches(sc)]
        if len(members) > 1 and not others and all(sc.locustfile not in NOT_COMPARED for sc in members):
            groups[service] = [sc.name for sc in members]
    return groups


class MetricsSampler:
    """``with MetricsSampler(settings, names) as w: <run the scenario>``: snapshots before/after, gauges between."""

    def __init__(self, settings: Settings, names: list[str], every_s: float = 0.5, gpu: bool = False,
                 engines: list[str] | None = None) -> None:
        self.urls = {n: settings.url(n) + "/metrics" for n in names}
        # whose gauges are sampled while it runs (default: every inference service of ``names``); a
        # scrape costs the engine's process CPU the decode loop shares, so only the engines it reaches
        self.engines = [n for n in (INFERENCE if engines is None else engines) if n in self.urls]
        self.every_s = every_s
        self.before: dict[str, Snapshot] = {}
        self.after: dict[str, Snapshot] = {}
        self.samples: list[Snapshot] = []
        self.gpu = gpu  # also sample every GPU's memory through NVML
        self.gpu_max_pct: dict[str, float] = {}  # "GPU 0 <name>" -> highest memory use seen
        self.gpu_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample_gpus(self) -> None:
        try:
            for g in read_gpus().gpus:
                key = f"GPU {g.index} {g.name}"
                self.gpu_max_pct[key] = max(self.gpu_max_pct.get(key, 0.0), g.memory_pct)
        except GpuUnavailable as exc:
            self.gpu_error = str(exc)

    def _sample(self) -> None:
        gauges = {n: self.urls[n] for n in self.engines}
        while (gauges or self.gpu) and not self._stop.wait(self.every_s):
            self.samples.extend(scrape_all(gauges, timeout=self.every_s * 3).values())
            if self.gpu:
                self._sample_gpus()

    def __enter__(self) -> MetricsSampler:
        self.before = scrape_all(self.urls)
        if self.gpu:
            self._sample_gpus()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="load-server-view")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.after = scrape_all(self.urls)


@dataclass
class ServiceView:
    service: str
    requests: float | None = None  # /ready left out
    by_class: dict[str, float] = field(default_factory=dict)  # 2xx, 4xx, 5xx
    status_429: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    cpu_s: float | None = None
    rss_mb: float | None = None
    note: str = ""  # scrape failed / restarted


@dataclass
class EngineView:
    service: str
    queue_max: float | None = None
    active_max: float | None = None
    slots: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    tokens: float | None = None
    rejected: float | None = None
    prompt_tokens_reused: float | None = None
    prompt_tokens_prefilled: float | None = None
    cache_hits: float | None = None
    cache_lookups: float | None = None
    hit_ratio: float | None = None  # share of the scenario's prompt tokens whose cells came from the prefix cache


def _ratio(part: float | None, rest: float | None) -> float | None:
    return part / (part + rest) if part is not None and rest is not None and part + rest else None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def service_view(before: Snapshot, after: Snapshot) -> ServiceView:
    view = ServiceView(before.service)
    if not (before.ok and after.ok):
        view.note = f"scrape failed: {before.error or after.error}"
        return view
    if before.started != after.started:
        view.note = "restarted during the scenario: its counters began again"
        return view
    view.requests = delta(before, after, "http_requests_total", route=f"!{PROBES}")
    for labels, value in after.select("http_requests_total", route=f"!{PROBES}").items():
        cls = dict(labels).get("status", "?")[:1] + "xx"
        view.by_class[cls] = view.by_class.get(cls, 0) + value - before.values.get(("http_requests_total", labels), 0)
    view.status_429 = delta(before, after, "http_requests_total", route=f"!{PROBES}", status="429")
    buckets = bucket_deltas(before, after, "http_request_duration_seconds", route=f"!{PROBES}")
    view.p50_ms, view.p95_ms = _ms(quantile(0.5, buckets)), _ms(quantile(0.95, buckets))
    view.cpu_s = delta(before, after, "process_cpu_seconds_total", absent=None)
    rss = after.get("process_resident_memory_bytes")
    view.rss_mb = None if rss is None else round(rss / 1e6, 1)
    return view


def engine_view(name: str, watch: MetricsSampler) -> EngineView:
    before, after = watch.before[name], watch.after[name]
    seen = [before, *[s for s in watch.samples if s.service == name], after]
    ttft = bucket_deltas(before, after, "inference_time_to_first_token_seconds")
    reused = delta(before, after, "inference_prompt_tokens_reused_total", absent=None)
    prefilled = delta(before, after, "inference_prompt_tokens_prefilled_total", absent=None)
    return EngineView(name, queue_max=maxima(seen, "inference_queue_depth"),
                      active_max=maxima(seen, "inference_active_slots"), slots=maxima(seen, "inference_slots"),
                      ttft_p50_ms=_ms(quantile(0.5, ttft)), ttft_p95_ms=_ms(quantile(0.95, ttft)),
                      tokens=delta(before, after, "inference_tokens_generated_total", absent=None),
                      rejected=delta(before, after, "inference_rejected_total", absent=None),
                      prompt_tokens_reused=reused, prompt_tokens_prefilled=prefilled,
                      cache_hits=delta(before, after, "inference_prefix_cache_hits_total", absent=None),
                      cache_lookups=delta(before, after, "inference_prefix_cache_lookups_total", absent=None),
                      hit_ratio=_ratio(reused, prefilled))


@dataclass
class ServerView:
    scenario: str
    target: str
    client_requests: int
    client_failed: int
    client_statuses: dict[str, int]
    client_p95_ms: float | None
    client_ttft_p95_ms: float | None
    services: dict[str, ServiceView]
    engines: dict[str, EngineView]
    compared: bool
    mismatch: str = ""

    @property
    def server(self) -> ServiceView:
        return self.services[self.target]


def client_samples(run: LoadRun) -> list:
    """Every request the client sent, warm-up included (the server counted those too)."""
    return [*run.warmup_samples, *run.samples]


def view(scenario: Scenario, run: LoadRun, watch: MetricsSampler, shared_with: list[str] | None = None) -> ServerView:
    every = client_samples(run)
    statuses: dict[str, int] = {}
    for s in every:
        m = HTTP_STATUS.search(s.error or "")
        if m:
            statuses[m.group(1)] = statuses.get(m.group(1), 0) + 1
    svc = {n: service_view(watch.before[n], watch.after[n]) for n in watch.before}
    engines = {n: engine_view(n, watch) for n in engines_of(scenario) if n in watch.before}
    ttfts = [s.ttft_ms for s in run.samples if s.ttft_ms is not None]
    out = ServerView(scenario.name, scenario.service, len(every), sum(not s.ok for s in every), statuses,
                     stats.percentile([s.ms for s in run.samples], 95), stats.percentile(ttfts, 95) if ttfts else None,
                     svc, engines, compared=scenario.locustfile not in NOT_COMPARED and not shared_with)
    server = svc.get(scenario.service)
    if server is None or server.requests is None:
        out.mismatch = f"no server count for {scenario.service}: {server.note if server else 'not scraped'}"
    elif out.compared and int(server.requests) != out.client_requests:
        out.mismatch = (f"client sent {out.client_requests} request(s), {scenario.service} counted "
                        f"{int(server.requests)}")
        if run.aborted or run.capped:
            out.mismatch += (" (the run was stopped early: a request cut off in flight is a censored sample, "
                             "one the server had not counted yet may be missing from its count)")
    return out


def _fmt(value: float | None, unit: str = "", digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}{unit}"


def record(scenario: Scenario, run: LoadRun, watch: MetricsSampler, base: Path | None = None,
           shared_with: list[str] | None = None) -> CheckResult:
    """One ``load.<scenario>.server`` result; the full view goes to ``server.json`` beside the samples.
    ``shared_with``: scenarios that ran at the same time and also reach the target service."""
    v = view(scenario, run, watch, shared_with)
    path = run.out_dir / "server.json"
    write_json(path, asdict(v))
    s = v.server
    classes = ", ".join(f"{k} {int(n)}" for k, n in s.by_class.items() if n) or "none"
    measured = (f"server {_fmt(s.requests)} req ({classes}; 429: {_fmt(s.status_429)}) · "
                f"client {v.client_requests} ({v.client_failed} failed)")
    detail = [f"{v.target}: server p50/p95 {_fmt(s.p50_ms, ' ms')}/{_fmt(s.p95_ms, ' ms')} from its histogram "
              f"(client exact p95 {_fmt(v.client_p95_ms, ' ms')})"]
    for e in v.engines.values():
        if e.slots is None and e.queue_max is None:
            continue
        detail.append(f"{e.service}: queue max {_fmt(e.queue_max)}, slots busy max {_fmt(e.active_max)}/"
                      f"{_fmt(e.slots)}, TTFT p50/p95 {_fmt(e.ttft_p50_ms, ' ms')}/{_fmt(e.ttft_p95_ms, ' ms')}"
                      f", {_fmt(e.tokens)} tokens, {_fmt(e.rejected)} rejected"
                      + (f", prefix cache {_fmt(e.hit_ratio * 100, ' %')} of prompt tokens reused "
                         f"({_fmt(e.cache_hits)} of {_fmt(e.cache_lookups)} prompts started from a cached prefix)"
                         if e.hit_ratio is not None else ""))
    detail.append("CPU s / RSS MB: " + ", ".join(f"{n} {_fmt(x.cpu_s, digits=1)}/{_fmt(x.rss_mb)}"
                                               for n, x in v.services.items()))
    if shared_with:
        detail.append(f"ran together with {', '.join(shared_with)}, which also reach {scenario.service}: "
                      "counts shown, not compared here")
    elif not v.compared:
        detail.append(f"{scenario.locustfile} {NOT_COMPARED[scenario.locustfile]}: counts shown, not compared")
    if v.mismatch:
        detail.append("mismatch: " + v.mismatch)
    if v.client_statuses:
        detail.append("client saw: " + ", ".join(f"HTTP {k} x{n}" for k, n in sorted(v.client_statuses.items())))
    return CheckResult(f"load.{scenario.name}.server", f"{scenario.name}: server-side view", STAGE,
                       Status.WARN if v.mismatch else Status.PASS,
                       target="server count = client count" if v.compared else "server counters read",
                       measured=measured, evidence=[rel_path(path, base)], detail="\n".join(detail),
                       started_at=run.started_at)


def gpu_memory(scenario: Scenario, run: LoadRun, watch: MetricsSampler, max_pct: float = 90.0) -> CheckResult:
    """The seeds' GPU memory < 90 % under load: the highest use of every GPU while the scenario ran."""
    title = f"{scenario.name}: GPU memory under load"
    if not watch.gpu_max_pct:
        return CheckResult(f"load.{scenario.name}.gpu_memory", title, STAGE, Status.FAIL,
                           target=f"every GPU < {max_pct:g} %", measured="no GPU readable",
                           detail=watch.gpu_error or "NVML gave no reading", started_at=run.started_at)
    worst = max(watch.gpu_max_pct.values())
    return CheckResult(f"load.{scenario.name}.gpu_memory", title, STAGE,
                       Status.PASS if worst < max_pct else Status.FAIL, target=f"every GPU < {max_pct:g} %",
                       measured=f"max {worst:.0f} %",
                       detail="; ".join(f"{k}: {v:.0f} %" for k, v in sorted(watch.gpu_max_pct.items()))
                              + f" (sampled every {watch.every_s:g} s)", started_at=run.started_at)


def record_group(service: str, runs: list[tuple[Scenario, LoadRun]], watch: MetricsSampler,
                 base: Path | None = None) -> CheckResult:
    """``load.<a>+<b>.server``: what ``service`` counted over a stage against the sum of the clients of
    the scenarios that entered it together (``entry_groups``)."""
    names = [sc.name for sc, _ in runs]
    label = "+".join(names)
    server = service_view(watch.before[service], watch.after[service])
    every = [s for _, run in runs for s in client_samples(run)]
    clients, failed = len(every), sum(not s.ok for s in every)
    mismatch = ""
    if server.requests is None:
        mismatch = f"no server count for {service}: {server.note or 'not scraped'}"
    elif int(server.requests) != clients:
        mismatch = f"clients sent {clients} request(s), {service} counted {int(server.requests)}"
        if any(run.aborted or run.capped for _, run in runs):
            mismatch += " (a run was stopped early: requests in flight then are not in its samples)"
    path = runs[0][1].out_dir.parent / f"{label}.server.json"
    write_json(path, {"service": service, "scenarios": names, "client_requests": clients,
                      "client_failed": failed, "server": asdict(server), "mismatch": mismatch})
    classes = ", ".join(f"{k} {int(n)}" for k, n in server.by_class.items() if n) or "none"
    detail = [f"{' and '.join(names)} ran together; {service} counted over the whole stage: server p50/p95 "
              f"{_fmt(server.p50_ms, ' ms')}/{_fmt(server.p95_ms, ' ms')} from its histogram"]
    if mismatch:
        detail.append("mismatch: " + mismatch)
    return CheckResult(f"load.{label}.server", f"{' + '.join(names)}: server-side view", STAGE,
                       Status.WARN if mismatch else Status.PASS, target="server count = client count",
                       measured=f"server {_fmt(server.requests)} req ({classes}; 429: {_fmt(server.status_429)}) · "
                                f"clients {clients} ({failed} failed)",
                       evidence=[rel_path(path, base)], detail="\n".join(detail), started_at=min(run.started_at for _, run in runs))

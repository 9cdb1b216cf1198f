"""How many users can this box serve: the highest load at which a scenario still meets its SLO.

Two searches over one scenario and its SLO (``harness.load.slo``), each probe a real Locust run
(``runner.run_scenario``) judged by its **attainment gate** with the order-statistic interval:

- **concurrency** (closed loop: N users, each waiting for its answer): 1, 2, 4, ... doubling while
  the probe passes, then bisecting between the highest level that passed and the lowest that did
  not until they are within ``tolerance`` (10 %) of each other (or adjacent integers);
- **rate** (open model: arrivals at R req/s, seeded Poisson, at most ``cap`` in flight): the same
  doubling and bisection on R, starting from the goodput the concurrency search's answer measured.

Each probe is **long enough to decide**: it is planned at the fewest requests whose interval can
clear the target (72 for 95 %, 36 for 90 %: ``stats.min_samples``) and extends itself while its
attainment is undecided, up to ``budget_factor`` times that (``runner.Budget``); a probe whose
attainment is decided against stops at once (``abort_on``). An open-model probe also stops early when
it is **over-saturated** (``harness.load.saturation``: the queue and TTFT both rising): the stack
cannot keep up with that rate at all. A probe that passed is a lower bound of the capacity; one
that failed, was over-saturated or stayed undecided is an upper bound (undecided: conservatively,
and the result says so). As GuideLLM's goodput search, a level is judged on attainment, not on
throughput, and the search ends when the bracket is narrow enough, when the ceiling
(``max_users`` / ``max_rate``) passes, or when its probe budget is spent.

The result is one sentence (``Capacity.sentence``), the probes with their attainment, interval,
throughput, goodput and latency percentiles, their raw samples (each probe's ``samples.jsonl``)
and a throughput–latency curve with the **knee** marked: the concurrency after which throughput
stops growing in proportion (Kneedle: the point of the normalised throughput curve farthest above
the chord from its first to its last point; Satopää et al., 2011).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from harness.load import saturation, stats
from harness.load.gates import evaluate
from harness.load.runner import LoadRun
from harness.load.scenarios import Scenario
from harness.load.slo import Slo
from harness.result import Status

TOLERANCE = 0.10
BUDGET_FACTOR = 3  # a probe may extend to this many times its planned requests to decide


@dataclass
class Probe:
    """One load level tried, and how it stood against the SLO."""

    kind: str  # "users" (closed loop) or "rate" (open model, req/s)
    level: float
    status: Status  # of the attainment gate: PASS, FAIL or INDETERMINATE
    attainment: float | None = None
    interval: tuple[float | None, float | None] | None = None
    judged: int = 0  # requests the attainment counts
    throughput: float | None = None  # successful requests per second
    goodput: float | None = None  # requests per second that met every objective
    p50_ms: float | None = None
    p95_ms: float | None = None
    ttft_p95_ms: float | None = None
    saturated: str = ""  # why it was stopped as over-saturated
    note: str = ""  # how the attainment was decided, what stopped it
    samples: str = ""  # its raw samples.jsonl
    duration_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status is Status.PASS and not self.saturated

    def label(self) -> str:
        return f"{self.level:g} users" if self.kind == "users" else f"{self.level:g} req/s"

    def verdict(self) -> str:
        """``PASS: attainment 98.6 % (95 % CI 95.0–99.9 %, 140 requests)``."""
        word = "over-saturated" if self.saturated else self.status.label
        if self.attainment is None:
            return f"{word}: no attainment"
        return f"{word}: attainment {pct(self.attainment)} ({ci_text(self.interval)}, {self.judged} requests)"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f} %"


def ci_text(interval: tuple[float | None, float | None] | None) -> str:
    if not interval:
        return "95 % CI n/a"
    lo, hi = interval
    return f"95 % CI {pct(lo)}–{pct(hi)}"


@dataclass
class Search:
    """One search's probes and where it ended."""

    kind: str
    probes: list[Probe] = field(default_factory=list)
    best: Probe | None = None  # the highest level that passed
    worst: Probe | None = None  # the lowest level that did not
    stop: str = ""

    @property
    def value(self) -> float | None:
        return self.best.level if self.best else None


def search(probe: Callable[[float], Probe], kind: str, start: float, *, ceiling: float,
           tolerance: float = TOLERANCE, floor: float | None = None, max_probes: int = 12,
           integer: bool = True, say: Callable[[str], None] | None = None) -> Search:
    """Doubling from ``start`` while probes pass, then bisection to within ``tolerance`` (module
    docstring). ``probe(level)`` runs one level; ``floor``: the lowest level worth trying when the
    first fails (halving down to it); ``integer``: levels are whole numbers (users)."""
    floor = floor if floor is not None else (1 if integer else start / 8)
    out = Search(kind)

    def run(level: float) -> Probe:
        level = max(1, int(level)) if integer else round(level, 3)
        done = next((p for p in out.probes if p.level == level), None)
        if done is not None:
            return done
        result = probe(level)
        out.probes.append(result)
        if result.passed and (out.best is None or level > out.best.level):
            out.best = result
        if not result.passed and (out.worst is None or level < out.worst.level):
            out.worst = result
        if say:
            say(f"capacity ({kind}) at {result.label()}: {result.verdict()}"
                + (f"; {result.saturated}" if result.saturated else ""))
        return result

    level = start
    while True:
        if len(out.probes) >= max_probes:
            out.stop = f"probe budget spent ({max_probes} probes)"
            return out
        result = run(level)
        if out.worst is not None:
            break
        if result.level >= ceiling:
            out.stop = f"the ceiling of {result.label()} met the SLO: the capacity is at least that"
            return out
        level = min(ceiling, level * 2)
    if out.best is None:  # the first level failed: walk down
        while out.best is None:
            lower = out.worst.level / 2
            if (integer and out.worst.level <= 1) or (not integer and lower < floor) or len(out.probes) >= max_probes:
                undecided = [p.label() for p in out.probes if p.status is Status.INDETERMINATE and not p.saturated]
                out.stop = (f"no level down to {out.worst.label()} met the SLO"
                            + (f" (undecided at {', '.join(undecided)}: more requests per probe would tell)"
                               if undecided else ""))
                return out
            run(lower)
    while len(out.probes) < max_probes:
        lo, hi = out.best.level, out.worst.level
        if hi - lo <= max(1 if integer else 0, tolerance * lo):
            out.stop = f"converged: {out.best.label()} passes, {out.worst.label()} does not (within {tolerance:.0%})"
            return out
        mid = (lo + hi) / 2
        run(math.floor(mid) if integer else mid)
    out.stop = f"probe budget spent ({max_probes} probes): between {out.best.label()} and {out.worst.label()}"
    return out


def knee(probes: list[Probe]) -> Probe | None:
    """The concurrency after which throughput stops growing in proportion (Kneedle over the probes
    sorted by level); None with fewer than three probes or a curve without a bend."""
    points = sorted((p for p in probes if p.throughput is not None), key=lambda p: p.level)
    if len(points) < 3:
        return None
    xs, ys = [p.level for p in points], [p.throughput for p in points]
    x0, x1, y0, y1 = xs[0], xs[-1], min(ys), max(ys)
    if x1 <= x0 or y1 <= y0:
        return None
    # normalised curve minus the chord from (0, first) to (1, last): the bend is where it is highest
    first = (ys[0] - y0) / (y1 - y0)
    last = (ys[-1] - y0) / (y1 - y0)
    gaps = [((y - y0) / (y1 - y0)) - (first + (last - first) * (x - x0) / (x1 - x0)) for x, y in zip(xs, ys)]
    best = max(range(len(points)), key=lambda i: gaps[i])
    return points[best] if gaps[best] > 0.05 else None


# -- probes of a real stack --------------------------------------------------------------------
def probe_scenario(base: Scenario, slo: Slo, kind: str, level: float, *, cap: int) -> Scenario:
    """The scenario one probe runs: ``base`` at ``level`` users (closed) or req/s (open, at most
    ``cap`` in flight), planned at the fewest requests that can decide its attainment."""
    planned = max(stats.min_samples(slo.target * 100), 4 * (int(level) if kind == "users" else cap))
    common = {"requests": planned, "budget": BUDGET_FACTOR * planned, "duration_s": 0.0,
              "slo": str(slo), "thresholds": ""}
    if kind == "users":
        return replace(base, name=f"{base.name}-at-{int(level)}-users", users=int(level), spawn_rate=int(level),
                       rate=0.0, **common)
    return replace(base, name=f"{base.name}-at-{level:g}-rps", users=cap, spawn_rate=1, rate=level, **common)


def probe_of(run: LoadRun, slo: Slo, kind: str, level: float, base: Path | None = None) -> Probe:
    """A finished probe run, judged against ``slo`` (its attainment gate, throughput, goodput, latencies)."""
    judged = evaluate(run.evidence(), slo.attainment)
    ok = [s for s in run.samples if s.ok]
    window = stats.window_s(ok)
    saturated = run.aborted.removeprefix("stopped early: ") if "over-saturated" in run.aborted else ""
    note = "; ".join(x for x in (judged.note, run.aborted if not saturated else "", run.capped) if x)
    ttfts = [s.ttft_ms for s in ok if s.ttft_ms is not None]
    samples = str(run.samples_file.relative_to(base)) if base and run.samples_file.is_relative_to(base) \
        else str(run.samples_file)
    return Probe(kind, level, judged.status, judged.value, judged.interval, judged.in_hand,
                 len(ok) / window if window > 0 else None,
                 evaluate(run.evidence(), slo.goodput).value,
                 stats.percentile([s.ms for s in run.samples], 50), stats.percentile([s.ms for s in run.samples], 95),
                 stats.percentile(ttfts, 95), saturated, note, samples, run.duration_s)


@dataclass
class Capacity:
    """Both searches for one scenario and SLO; what the runbook records and draws."""

    scenario: str
    slo: Slo
    users: Search
    rate: Search | None
    cap: int  # the open model's in-flight cap
    contended: str = ""  # the box was contended while it ran (the figures are then an underestimate)

    @property
    def knee(self) -> Probe | None:
        return knee(self.users.probes)

    def sentence(self) -> str:
        """``This stack serves 6 concurrent chat users / 2.1 req/s within its SLO (...)``."""
        what = f"within its SLO ({self.slo.describe()})"
        parts = []
        best = self.users.best
        parts.append(f"{best.level:g} concurrent {self.scenario} users" if best else
                     f"no concurrency of {self.scenario} users")
        if self.rate is not None:
            rbest = self.rate.best
            parts.append(f"{rbest.level:g} req/s (Poisson arrivals, at most {self.cap} in flight)" if rbest
                         else "no arrival rate tried")
        text = f"This stack serves {' / '.join(parts)} {what}"
        if best:
            text += f"; attainment at {best.label()}: {pct(best.attainment)} ({ci_text(best.interval)})"
        if self.users.worst:
            text += f"; at {self.users.worst.label()}: {self.users.worst.verdict()}"
        if self.rate is not None and self.rate.best:
            text += f"; at {self.rate.best.label()}: {pct(self.rate.best.attainment)} ({ci_text(self.rate.best.interval)})"
        if self.contended:
            text += f". Measured while the box was contended ({self.contended}): an underestimate"
        return text + "."

    def to_json(self) -> dict:
        def one(s: Search | None) -> dict | None:
            if s is None:
                return None
            return {"kind": s.kind, "stop": s.stop, "capacity": s.value,
                    "probes": [{**asdict(p), "status": p.status.value} for p in s.probes]}

        k = self.knee
        return {"scenario": self.scenario, "slo": str(self.slo), "slo_text": self.slo.describe(),
                "target": self.slo.target, "cap": self.cap, "sentence": self.sentence(), "contended": self.contended,
                "knee_users": k.level if k else None, "users": one(self.users), "rate": one(self.rate)}

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2))
        return path


def stop_for(kind: str) -> Callable[[list], str] | None:
    """What stops a probe early besides a lost gate: over-saturation, for the open model."""
    return saturation.stop_when_saturated if kind == "rate" else None


def measure(settings, scenario: Scenario, load_dir: Path, *, slo: Slo | None = None, max_users: int = 32,
            rate_search: bool = True, max_rate: float = 0.0, cap: int = 0, tolerance: float = TOLERANCE,
            max_probes: int = 10, warmup_s: float = 2.0, max_run_s: float = 120.0,
            outside_cpu_limit_pct: float | None = None, benchmark: bool = True, base: Path | None = None,
            progress: Callable[[str], None] | None = None, extra_env: dict[str, str] | None = None) -> Capacity:
    """Run both searches (module docstring) for ``scenario`` against the stack of ``settings``; each
    probe's Locust outputs and raw samples go to ``load_dir/<users|rate>/<probe>/``. ``cap``: the open
    model's in-flight cap (default ``max_users``); ``max_rate``: the rate search's ceiling (default
    16 × where it starts); ``max_run_s``: the time cap of a probe's planned requests; ``extra_env``:
    the locustfiles' keys and files (default: ``plan.load_env``, the run's keys)."""
    from harness.envcheck.contention import OUTSIDE_PCT, CpuWatch, cpu_benchmark
    from harness.load import runner
    from harness.load.plan import load_env

    slo = slo or scenario.service_level()
    if slo is None:
        raise ValueError(f"scenario {scenario.name!r} has no SLO to search against: give one "
                         "(e.g. -p slo=ttft_p95<3s,p95<15s,attainment>=95%)")
    cap = cap or max_users
    extra_env = load_env(settings, scenario) if extra_env is None else extra_env
    url = settings.url(scenario.service)

    def probe(kind: str, level: float) -> Probe:
        sc = probe_scenario(scenario, slo, kind, level, cap=cap)
        if progress:
            progress(f"capacity: probing {sc.pace()} ({sc.requests} requests planned, up to {sc.budget})")
        run = runner.run_scenario(sc, url, Path(load_dir) / kind / sc.name, warmup_s=warmup_s,
                                  abort_on=[slo.attainment], extend_on=[slo.attainment], stop_on=stop_for(kind),
                                  max_run_s=max_run_s, extra_env=extra_env, progress=progress)
        return probe_of(run, slo, kind, level, base)

    bench = cpu_benchmark() if benchmark else None
    limit = OUTSIDE_PCT if outside_cpu_limit_pct is None else outside_cpu_limit_pct
    with CpuWatch(settings, benchmark=bench, outside_limit_pct=limit) as box:
        users = search(lambda level: probe("users", level), "users", 1, ceiling=max_users, tolerance=tolerance,
                       max_probes=max_probes, say=progress)
        rate = None
        if rate_search:
            start = next((x for x in (users.best.goodput, users.best.throughput) if x), None) if users.best else None
            start = round(start or 0.5, 2)
            rate = search(lambda level: probe("rate", level), "rate", start, ceiling=max_rate or 16 * start,
                          tolerance=tolerance, floor=start / 8, max_probes=max_probes, integer=False, say=progress)
    contended = "; ".join(box.reading().reasons(names=1))
    return Capacity(scenario.name, slo, users, rate, cap, contended)


def results(capacity: Capacity, base: Path | None = None, evidence: list[str] | None = None,
            stated_users: int = 0) -> list:
    """``CheckResult`` records: the capacity in users and in req/s (info; a warning when none passed,
    when the capacity is below ``stated_users`` — the concurrency a GO was judged at — or when the box
    was contended), then one info row per probe with its attainment and 95 % interval."""
    from harness.result import CheckResult, Stage

    evidence = list(evidence or [])
    prefix = f"load.capacity.{capacity.scenario}"
    target = f"attainment ≥ {capacity.slo.target * 100:g} % of: {capacity.slo.describe().rsplit(' for ', 1)[0]}"
    out = []
    for search_ in (capacity.users, capacity.rate):
        if search_ is None:
            continue
        best = search_.best
        unit = "users" if search_.kind == "users" else "req/s"
        warn = best is None or bool(capacity.contended) or (search_.kind == "users" and best.level < stated_users)
        detail = [capacity.sentence(), f"search: {search_.stop}",
                  "probes: " + "; ".join(f"{p.label()} {p.verdict()}" for p in search_.probes)]
        if search_.kind == "users" and (k := capacity.knee) is not None:
            detail.append(f"throughput knee at {k.label()} ({k.throughput:.2f} req/s)")
        if search_.kind == "users" and best is not None and best.level < stated_users:
            detail.append(f"below the {stated_users} users the load gates are judged at")
        out.append(CheckResult(
            f"{prefix}.{search_.kind}", f"{capacity.scenario}: the highest {'concurrency' if unit == 'users' else 'arrival rate'} "
            f"within the SLO", Stage.LOAD, Status.WARN if warn else Status.INFO, target=target,
            value=best.level if best else None, unit=unit,
            measured=f"{best.level:g} {unit}" if best else "none met the SLO", evidence=evidence,
            detail="; ".join(detail), caveat=f"box contended: {capacity.contended}" if capacity.contended else "",
            duration_s=round(sum(p.duration_s for p in search_.probes), 1)))
        for p in search_.probes:
            level = f"{int(p.level)}-users" if p.kind == "users" else f"{p.level:g}-rps"
            figures = [f"throughput {p.throughput:.2f} req/s" if p.throughput else "",
                       f"goodput {p.goodput:.2f} req/s" if p.goodput is not None else "",
                       f"p50 {p.p50_ms:.0f} ms, p95 {p.p95_ms:.0f} ms" if p.p95_ms is not None else "",
                       f"TTFT p95 {p.ttft_p95_ms:.0f} ms" if p.ttft_p95_ms is not None else "", p.saturated, p.note]
            out.append(CheckResult(
                f"{prefix}.{level}", f"{capacity.scenario} at {p.label()}", Stage.LOAD, Status.INFO,
                target=target, value=p.attainment, unit="share", measured=p.verdict(),
                evidence=[p.samples], detail="; ".join(f for f in figures if f),
                interval=list(p.interval) if p.interval else None, duration_s=p.duration_s))
    return out


@dataclass(frozen=True)
class Form:
    """How thorough a search is: the release form (``seed``) or the quick one (``quick``, development)."""

    scenario: str
    max_users: int
    tolerance: float
    max_probes: int
    max_tokens: int = 0  # 0: the scenario's own
    slo: str = ""  # "": the scenario's own


FORMS = {
    # streamed chat as the quick and the release load runbook send it, its SLO as stated (95 %: 72+
    # requests a probe), bisected to 10 %
    "seed": Form("chat", max_users=32, tolerance=TOLERANCE, max_probes=10),
    # shorter answers, a 90 % target (36+ requests a probe), a coarser bracket and ceiling: a few minutes
    "quick": Form("chat", max_users=8, tolerance=0.25, max_probes=6, max_tokens=16,
                  slo="ttft_p95<3s,tpot_p95<500ms,p95<15s,attainment>=90%"),
}

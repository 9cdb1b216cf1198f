"""The scenario table: which locustfile, against which service, how hard, judged by which targets.

Two profiles choose the scenarios of a run (``-p profile=...`` of the load runbook):

- ``seed`` (the default, what a GO means): seed ``004``'s own load — 100 code completions at 5 users
  (p95 < 3 s, success > 97 %), 50 streamed chats at 3 users (p95 < 30 s) and 20 at 2 users (p95 <
  70 s), both with > 93 % success and TTFT / ITL / tokens per second shown beside the gate — plus
  RAG, embedding and tools.
- ``quick`` (development): short runs of the same surfaces: ``code`` (2 users, the seed's API
  target), streamed ``chat`` with a wider 15-s tier (TTFT < 3 s), embedding, RAG, tools.

A profile is a list of **stages**; the scenarios of a stage run at the same time, the stages one
after the other. By default **each gate is measured as its seed states it**: every heavy scenario
alone on the stack (100@5 without the embedding scenario beside it, 50@3 and 20@2 each on their own),
the two light ones (embedding, tools: a few milliseconds of CPU per request, on services no heavy
scenario uses) together, RAG last. ``overlap=True`` (``-p overlap=true``) runs the profile's
``OVERLAPPED`` stages instead, a shorter run: 100@5 beside embedding, 50@3 and 20@2 together with
tools; each gate measured so says so (``caveat``: measured under extra load). Scenarios named with
``-p scenarios=...`` run one stage each, light ones together after them (beside the last heavy one
with ``overlap``).

**Counts and budgets.** ``requests`` is the count the seed states; ``budget`` is how far the run may
extend itself to decide an undecided percentile gate (``harness.load.runner``): a p95's interval has
no upper bound below 72 samples, so 20@2 alone can show a p95 above its target but never below it,
and extends to about 72 requests before its gate can pass. How long the seed's chats are is ours to
choose (the seed gives counts, concurrency and targets): 50@3 generate up to 96 tokens and 20@2 up
to 192, twice as long, as the seed's targets are (30 s and 70 s). The seed's RAG target (> 1 req/s)
needs a GPU and is only in ``rag-gpu``: on the CPU each RAG answer generates 128 tokens (~0.5 req/s
at 3 users).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harness.load.slo import Slo, parse_slo
from harness.load.thresholds import Threshold, parse_metrics, parse_thresholds
from suite.settings import project_root

ARRIVALS = ("poisson", "constant")


@dataclass(frozen=True)
class Scenario:
    name: str
    locustfile: str  # file name under load/
    service: str  # the service whose URL is the host
    phase: int  # first phase that runs the service
    users: int
    spawn_rate: float
    requests: int = 0  # stop after this many measured requests (0: no count limit)
    budget: int = 0  # requests it may extend to while a percentile gate is undecided (0: requests)
    duration_s: float = 0.0  # stop after this long (0: no time limit beyond the safety cap)
    max_tokens: int = 16
    thresholds: str = ""
    description: str = ""
    shown: str = ""  # figures measured and shown, not judged (e.g. ttft_p95,itl_p95)
    light: bool = False  # may run beside the heavy scenarios (see the module docstring)
    slo: str = ""  # objectives + attainment target (harness.load.slo): ttft_p95<3s,p95<15s,attainment>=95%
    rate: float = 0.0  # > 0: open model, requests arrive at this rate (req/s) and `users` caps those in flight
    arrivals: str = "poisson"  # open model: poisson (seeded exponential gaps) or constant (evenly spaced)
    seed: int = 1  # open model: the Poisson timetable's seed (the same seed, the same timetable)

    def __post_init__(self) -> None:
        if self.rate < 0 or (self.rate and self.arrivals not in ARRIVALS):
            raise ValueError(f"scenario {self.name!r}: rate must be >= 0 and arrivals one of {', '.join(ARRIVALS)}")

    @property
    def locustfile_path(self):
        return project_root() / "load" / self.locustfile

    @property
    def open_model(self) -> bool:
        """Requests arrive on a timetable (``rate``) whatever the answers do, rather than from
        ``users`` that each wait for an answer before asking again (a closed loop)."""
        return self.rate > 0

    def load_model(self) -> str:
        """``closed loop: 5 users`` or ``open model: Poisson arrivals at 2 req/s (seed 1), at most 8 in flight``."""
        if not self.open_model:
            return f"closed loop: {self.users} user(s), each waiting for its answer before the next request"
        how = f"Poisson arrivals at {self.rate:g} req/s (seed {self.seed})" if self.arrivals == "poisson" else \
            f"constant arrivals at {self.rate:g} req/s"
        return f"open model: {how}, at most {self.users} in flight (latency from each request's scheduled start)"

    def pace(self) -> str:
        """``at 5 users`` or ``arriving at 2 req/s (Poisson), ≤ 8 in flight``."""
        if not self.open_model:
            return f"at {self.users} users"
        return f"arriving at {self.rate:g} req/s ({self.arrivals}), ≤ {self.users} in flight"

    def service_level(self) -> Slo | None:
        return parse_slo(self.slo)

    def targets(self) -> list[Threshold]:
        """The scenario's gates, then its SLO's attainment (the one gate an SLO adds)."""
        out = parse_thresholds(self.thresholds)
        objective = self.service_level()
        if objective is not None:
            out.append(objective.attainment)
        return out

    def figures(self) -> list[Threshold]:
        """Shown beside the gates, never judged: ``shown``, the SLO's objectives (each its percentile
        with its interval) and goodput."""
        out = parse_metrics(self.shown)
        objective = self.service_level()
        if objective is not None:
            for o in objective.objectives:  # the objective's own bound stays in its text
                out = [f for f in out if (f.metric, f.row) != (o.metric, o.row)]
                out.append(replace(o, op="", text=f"{o.text} (SLO objective)"))
            out.append(objective.goodput)
        return out

    def stop_condition(self) -> str:
        parts = []
        if self.requests:
            parts.append(f"{self.requests} requests")
        if self.duration_s:
            parts.append(f"{self.duration_s:g} s")
        return " or ".join(parts) or "safety cap"


LLM_FIGURES = "ttft_p50,ttft_p95,itl_p50,itl_p95,tps_p50"
# The SLOs (harness.load.slo): the seed's latency bound per request for 95 % of requests (93 % where
# the seed asks > 93 % success), and for streamed chats a first token within 3-5 s and at least 2
# tokens a second (TPOT < 500 ms), generous on 2 CPU cores; a failed request misses them all
SLO_CODE = "p95<3s,attainment>=95%"

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("code", "gateway_code.py", "gateway", 1, users=2, spawn_rate=2, requests=20, budget=100, max_tokens=12,
             thresholds="p95<3000ms,fail_ratio<0.03", slo=SLO_CODE,
             description="code completions through the gateway (the seed's API target)"),
    Scenario("chat", "gateway_chat_stream.py", "gateway", 1, users=2, spawn_rate=2, requests=10, budget=100,
             max_tokens=24,
             thresholds="p95<15s,ttft_p95<3000ms,tps_p50>2,fail_ratio<0.07", shown="itl_p50,itl_p95",
             slo="ttft_p95<3s,tpot_p95<500ms,p95<15s,attainment>=95%",
             description="streamed chat through the gateway: full time, TTFT, ITL, tokens/s"),
    Scenario("embedding", "embedding.py", "embedding", 2, users=3, spawn_rate=3, requests=30, budget=150,
             thresholds="p95<3000ms,fail_ratio<0.03", slo=SLO_CODE, description="two texts per /embed call",
             light=True),
    Scenario("rag", "rag_query.py", "rag", 2, users=3, spawn_rate=3, requests=9, budget=100,
             thresholds="p95<30s,fail_ratio<0.07", slo="p95<30s,attainment>=93%",
             description="retrieve + answer; the seed's 50-at-3 target shape, sized for the CPU"),
    Scenario("tools", "tools_read_file.py", "tools", 3, users=2, spawn_rate=2, requests=30, budget=100,
             thresholds="p95<3000ms,fail_ratio<0.03", slo=SLO_CODE, description="read_file on a sandboxed file",
             light=True),
    Scenario("mixed", "mixed.py", "gateway", 1, users=2, spawn_rate=2, duration_s=30, max_tokens=12,
             thresholds="fail_ratio<0.07", description="code, chat and (phase 2) embedding and RAG together"),
    Scenario("seed-100x5", "gateway_code.py", "gateway", 1, users=5, spawn_rate=5, requests=100, budget=300,
             max_tokens=16,
             thresholds="p95<3000ms,fail_ratio<0.03", slo=SLO_CODE, description="seed: 100 requests at 5 concurrent"),
    Scenario("seed-50x3", "gateway_chat_stream.py", "gateway", 1, users=3, spawn_rate=3, requests=50, budget=150,
             max_tokens=96, thresholds="p95<30s,fail_ratio<0.07", shown=LLM_FIGURES,
             slo="ttft_p95<5s,tpot_p95<500ms,p95<30s,attainment>=93%",
             description="seed: 50 streamed chats at 3 concurrent"),
    Scenario("seed-20x2", "gateway_chat_stream.py", "gateway", 1, users=2, spawn_rate=2, requests=20, budget=100,
             max_tokens=192, thresholds="p95<70s,fail_ratio<0.07", shown=LLM_FIGURES,
             slo="ttft_p95<5s,tpot_p95<500ms,p95<70s,attainment>=93%",
             description="seed: 20 long streamed chats at 2 concurrent"),
    Scenario("ceiling", "health_ceiling.py", "gateway", 1, users=10, spawn_rate=10, duration_s=10,
             thresholds="", description="the load generator's own ceiling against a trivial endpoint"),
    Scenario("rag-gpu", "rag_query.py", "rag", 2, users=3, spawn_rate=3, requests=50, budget=150,
             thresholds="rps>1,p95<30s,fail_ratio<0.07", slo="p95<30s,attainment>=93%",
             description="seed: RAG > 1 req/s concurrently (GPU)"),
    # open model: requests arrive on a seeded Poisson timetable whatever the answers do (no coordinated
    # omission), at most `users` in flight; latency counts from each request's scheduled start
    Scenario("chat-poisson", "gateway_chat_stream.py", "gateway", 1, users=8, spawn_rate=1, requests=40, budget=150,
             max_tokens=24, rate=1.0, arrivals="poisson", seed=1, thresholds="fail_ratio<0.07",
             shown="ttft_p50,ttft_p95,itl_p95", slo="ttft_p95<3s,tpot_p95<500ms,p95<15s,attainment>=95%",
             description="streamed chats arriving as a Poisson process at 1 req/s (open model)"),
)}

ALIASES = {"seed": ["seed-100x5", "seed-50x3", "seed-20x2"]}
# Each profile's stages, in order (see the module docstring): every gate as its seed states it ...
PROFILES: dict[str, list[list[str]]] = {
    "seed": [["seed-100x5"], ["seed-50x3"], ["seed-20x2"], ["embedding", "tools"], ["rag"]],
    "quick": [["code"], ["chat"], ["embedding", "tools"], ["rag"]],
}
# ... or, with ``overlap``, a shorter run whose gates are measured beside other load (and say so)
OVERLAPPED: dict[str, list[list[str]]] = {
    "seed": [["seed-100x5", "embedding"], ["seed-50x3", "seed-20x2", "tools"], ["rag"]],
    "quick": [["code", "embedding"], ["chat", "tools"], ["rag"]],
}


def profile_stages(profile: str, overlap: bool = False) -> list[list[str]]:
    if profile not in PROFILES:
        raise ValueError(f"unknown load profile {profile!r}; profiles: {', '.join(PROFILES)}")
    return (OVERLAPPED if overlap else PROFILES)[profile]


def named_stages(names: list[str], overlap: bool = False) -> list[list[str]]:
    """Stages for scenarios named one by one: each heavy one alone, then the light ones together
    (with ``overlap``, the light ones beside the last heavy one)."""
    light = [n for n in names if SCENARIOS[n].light]
    heavy = [[n] for n in names if n not in light]
    if not heavy or not light:
        return heavy or [light]
    if overlap:
        heavy[-1] += light
        return heavy
    return [*heavy, light]


def select_scenarios(names: str | list[str]) -> list[Scenario]:
    """Scenarios by name (comma-separated or a list; ``seed`` expands to the three seed rows)."""
    items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    out: list[Scenario] = []
    for name in items:
        for real in ALIASES.get(name, [name]):
            if real not in SCENARIOS:
                raise ValueError(f"unknown load scenario {real!r}; known: {', '.join([*SCENARIOS, *ALIASES])}")
            out.append(SCENARIOS[real])
    if not out:
        raise ValueError("no load scenario selected")
    return out


def with_overrides(scenario: Scenario, *, users: int = 0, spawn_rate: float = 0.0, requests: int = 0,
                   duration_s: float = 0.0, thresholds: str = "", max_tokens: int = 0, slo: str = "",
                   rate: float = 0.0, arrivals: str = "", seed: int | None = None) -> Scenario:
    """A copy with the non-empty overrides applied (0 / "" / None keep the scenario's own value).
    ``rate`` > 0 turns the scenario into an open model (``users`` then caps the requests in flight).

    ``thresholds`` replaces every target, the SLO's attainment included, unless ``slo`` is given too.
    Giving ``requests`` or ``duration_s`` replaces the stop condition, so one of them never lingers;
    a new ``requests`` keeps the scenario's budget in proportion (20 of 100 -> 40 of 200).
    """
    changes: dict = {}
    if users:
        changes["users"] = users
        changes["spawn_rate"] = spawn_rate or users
    if spawn_rate:
        changes["spawn_rate"] = spawn_rate
    if requests or duration_s:
        changes["requests"], changes["duration_s"] = requests, duration_s
        ratio = scenario.budget / scenario.requests if scenario.requests and scenario.budget else 1
        changes["budget"] = round(requests * ratio) if requests else 0
    if thresholds:
        parse_thresholds(thresholds)  # a bad override fails here, before anything runs
        changes["thresholds"] = thresholds
        if not slo:  # every target replaced, the SLO's attainment gate too (give ``slo`` to keep one)
            changes["slo"] = ""
    if max_tokens:
        changes["max_tokens"] = max_tokens
    if slo:
        parse_slo(slo)  # a bad SLO fails here too
        changes["slo"] = slo
    if rate:
        changes["rate"] = rate
    if arrivals:
        changes["arrivals"] = arrivals
    if seed is not None:
        changes["seed"] = seed
    return replace(scenario, **changes)

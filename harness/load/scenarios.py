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

from harness.load.thresholds import Threshold, parse_metrics, parse_thresholds
from suite.settings import project_root


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

    @property
    def locustfile_path(self):
        return project_root() / "load" / self.locustfile

    def targets(self) -> list[Threshold]:
        return parse_thresholds(self.thresholds)

    def figures(self) -> list[Threshold]:
        return parse_metrics(self.shown)

    def stop_condition(self) -> str:
        parts = []
        if self.requests:
            parts.append(f"{self.requests} requests")
        if self.duration_s:
            parts.append(f"{self.duration_s:g} s")
        return " or ".join(parts) or "safety cap"


LLM_FIGURES = "ttft_p50,ttft_p95,itl_p50,itl_p95,tps_p50"

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("code", "gateway_code.py", "gateway", 1, users=2, spawn_rate=2, requests=20, budget=100, max_tokens=12,
             thresholds="p95<3000ms,fail_ratio<0.03",
             description="code completions through the gateway (the seed's API target)"),
    Scenario("chat", "gateway_chat_stream.py", "gateway", 1, users=2, spawn_rate=2, requests=10, budget=100,
             max_tokens=24,
             thresholds="p95<15s,ttft_p95<3000ms,tps_p50>2,fail_ratio<0.07", shown="itl_p50,itl_p95",
             description="streamed chat through the gateway: full time, TTFT, ITL, tokens/s"),
    Scenario("embedding", "embedding.py", "embedding", 2, users=3, spawn_rate=3, requests=30, budget=150,
             thresholds="p95<3000ms,fail_ratio<0.03", description="two texts per /embed call", light=True),
    Scenario("rag", "rag_query.py", "rag", 2, users=3, spawn_rate=3, requests=9, budget=100,
             thresholds="p95<30s,fail_ratio<0.07",
             description="retrieve + answer; the seed's 50-at-3 target shape, sized for the CPU"),
    Scenario("tools", "tools_read_file.py", "tools", 3, users=2, spawn_rate=2, requests=30, budget=100,
             thresholds="p95<3000ms,fail_ratio<0.03", description="read_file on a sandboxed file", light=True),
    Scenario("mixed", "mixed.py", "gateway", 1, users=2, spawn_rate=2, duration_s=30, max_tokens=12,
             thresholds="fail_ratio<0.07", description="code, chat and (phase 2) embedding and RAG together"),
    Scenario("seed-100x5", "gateway_code.py", "gateway", 1, users=5, spawn_rate=5, requests=100, budget=300,
             max_tokens=16,
             thresholds="p95<3000ms,fail_ratio<0.03", description="seed: 100 requests at 5 concurrent"),
    Scenario("seed-50x3", "gateway_chat_stream.py", "gateway", 1, users=3, spawn_rate=3, requests=50, budget=150,
             max_tokens=96, thresholds="p95<30s,fail_ratio<0.07", shown=LLM_FIGURES,
             description="seed: 50 streamed chats at 3 concurrent"),
    Scenario("seed-20x2", "gateway_chat_stream.py", "gateway", 1, users=2, spawn_rate=2, requests=20, budget=100,
             max_tokens=192, thresholds="p95<70s,fail_ratio<0.07", shown=LLM_FIGURES,
             description="seed: 20 long streamed chats at 2 concurrent"),
    Scenario("ceiling", "health_ceiling.py", "gateway", 1, users=10, spawn_rate=10, duration_s=10,
             thresholds="", description="the load generator's own ceiling against a trivial endpoint"),
    Scenario("rag-gpu", "rag_query.py", "rag", 2, users=3, spawn_rate=3, requests=50, budget=150,
             thresholds="rps>1,p95<30s,fail_ratio<0.07", description="seed: RAG > 1 req/s concurrently (GPU)"),
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
                   duration_s: float = 0.0, thresholds: str = "", max_tokens: int = 0) -> Scenario:
    """A copy with the non-empty overrides applied (0 / "" keep the scenario's own value).

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
    if max_tokens:
        changes["max_tokens"] = max_tokens
    return replace(scenario, **changes)

"""The scenario table: which locustfile, against which service, how hard, judged by which targets.

Two profiles choose the scenarios of a run (``-p profile=...`` of the load runbook):

- ``seed`` (the default, what a GO means): seed ``004``'s own load — 100 code completions at 5 users
  (p95 < 3 s, success > 97 %), 50 streamed chats at 3 users (p95 < 30 s) and 20 at 2 users (p95 <
  70 s), both with > 93 % success and TTFT / ITL / tokens per second shown beside the gate — plus
  RAG, embedding and tools. Measured in the pipeline on 2 cores with the batched engine (8 slots):
  100@5 p95 1.35-1.46 s, 50@3 p95 8.3-9.2 s and 20@2 p95 16-18 s running together (README).
- ``quick`` (development): short runs of the same surfaces, under two minutes: ``code`` (2 users,
  the seed's API target), streamed ``chat`` with a wider 15-s tier (TTFT < 3 s), embedding, RAG, tools.

A profile is a list of **stages**; the scenarios of a stage run at the same time, the stages one
after the other. Running together only ever makes a gate harder to pass (a scenario shares the box
with the others of its stage), so a PASS still means what the seed means; with the chat lengths below it
brings the seed profile's load step from ~7.5 to under 4 minutes on 2 cores:

- ``seed-100x5`` (the tightest target, p95 < 3 s on the code model) has the code model to itself;
  only the ``light`` embedding scenario (a few milliseconds of CPU per request) runs beside it;
- ``seed-50x3`` and ``seed-20x2`` stream from the chat model together: 5 sequences on the 8 slots
  of the batched engine decode more tokens per second than 3 and then 2 one after the other;
  the light ``tools`` scenario runs beside them (it has a guest key of its own, minted for it,
  so its per-minute tool budget of 60 calls is never one the runbooks before it spent);
- ``rag`` runs last, alone: its answers go through the gateway to the chat model, so beside the
  chat scenarios nothing could tell whose requests the gateway counted (the server-side view).

How long the seed's chats are is ours to choose (the seed gives counts, concurrency and targets):
50@3 generate up to 96 tokens and 20@2 up to 192, twice as long, as the seed's targets are (30 s
and 70 s), and the two end close together (17 rounds of 96 against 10 of 192 tokens), so the 2-core
box is never left decoding one scenario's tail. At 128 / 256 tokens the stage took ~3.8 minutes,
at 512 the 20 long chats alone took four.

Scenarios named with ``-p scenarios=...`` run one stage each, in order, with the light ones beside
the last. The seed's RAG target (> 1 req/s) needs a GPU and is only in ``rag-gpu``: on the CPU each
RAG answer generates 128 tokens (~0.5 req/s at 3 users).
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
    Scenario("code", "gateway_code.py", "gateway", 1, users=2, spawn_rate=2, requests=20, max_tokens=12,
             thresholds="p95<3000ms,fail_ratio<0.03",
             description="code completions through the gateway (the seed's API target)"),
    Scenario("chat", "gateway_chat_stream.py", "gateway", 1, users=2, spawn_rate=2, requests=10, max_tokens=24,
             thresholds="p95<15s,ttft_p95<3000ms,tps_p50>2,fail_ratio<0.07", shown="itl_p50,itl_p95",
             description="streamed chat through the gateway: full time, TTFT, ITL, tokens/s"),
    Scenario("embedding", "embedding.py", "embedding", 2, users=3, spawn_rate=3, requests=30,
             thresholds="p95<3000ms,fail_ratio<0.03", description="two texts per /embed call", light=True),
    Scenario("rag", "rag_query.py", "rag", 2, users=3, spawn_rate=3, requests=9,
             thresholds="p95<30s,fail_ratio<0.07",
             description="retrieve + answer; the seed's 50-at-3 target shape, sized for the CPU"),
    Scenario("tools", "tools_read_file.py", "tools", 3, users=2, spawn_rate=2, requests=30,
             thresholds="p95<3000ms,fail_ratio<0.03", description="read_file on a sandboxed file", light=True),
    Scenario("mixed", "mixed.py", "gateway", 1, users=2, spawn_rate=2, duration_s=30, max_tokens=12,
             thresholds="fail_ratio<0.07", description="code, chat and (phase 2) embedding and RAG together"),
    Scenario("seed-100x5", "gateway_code.py", "gateway", 1, users=5, spawn_rate=5, requests=100, max_tokens=16,
             thresholds="p95<3000ms,fail_ratio<0.03", description="seed: 100 requests at 5 concurrent"),
    Scenario("seed-50x3", "gateway_chat_stream.py", "gateway", 1, users=3, spawn_rate=3, requests=50,
             max_tokens=96, thresholds="p95<30s,fail_ratio<0.07", shown=LLM_FIGURES,
             description="seed: 50 streamed chats at 3 concurrent"),
    Scenario("seed-20x2", "gateway_chat_stream.py", "gateway", 1, users=2, spawn_rate=2, requests=20,
             max_tokens=192, thresholds="p95<70s,fail_ratio<0.07", shown=LLM_FIGURES,
             description="seed: 20 long streamed chats at 2 concurrent"),
    Scenario("ceiling", "health_ceiling.py", "gateway", 1, users=10, spawn_rate=10, duration_s=10,
             thresholds="", description="the load generator's own ceiling against a trivial endpoint"),
    Scenario("rag-gpu", "rag_query.py", "rag", 2, users=3, spawn_rate=3, requests=50,
             thresholds="rps>1,p95<30s,fail_ratio<0.07", description="seed: RAG > 1 req/s concurrently (GPU)"),
)}

ALIASES = {"seed": ["seed-100x5", "seed-50x3", "seed-20x2"]}
# Each profile's stages, in order (see the module docstring).
PROFILES: dict[str, list[list[str]]] = {
    "seed": [["seed-100x5", "embedding"], ["seed-50x3", "seed-20x2", "tools"], ["rag"]],
    "quick": [["code", "embedding"], ["chat", "tools"], ["rag"]],
}


def profile_stages(profile: str) -> list[list[str]]:
    if profile not in PROFILES:
        raise ValueError(f"unknown load profile {profile!r}; profiles: {', '.join(PROFILES)}")
    return PROFILES[profile]


def named_stages(names: list[str]) -> list[list[str]]:
    """Stages for scenarios named one by one: each heavy one alone, the light ones beside the last."""
    light = [n for n in names if SCENARIOS[n].light]
    heavy = [[n] for n in names if n not in light]
    if not heavy:
        return [light]
    heavy[-1] += light
    return heavy


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

    Giving ``requests`` or ``duration_s`` replaces the stop condition, so one of them never lingers.
    """
    changes: dict = {}
    if users:
        changes["users"] = users
        changes["spawn_rate"] = spawn_rate or users
    if spawn_rate:
        changes["spawn_rate"] = spawn_rate
    if requests or duration_s:
        changes["requests"], changes["duration_s"] = requests, duration_s
    if thresholds:
        parse_thresholds(thresholds)  # a bad override fails here, before anything runs
        changes["thresholds"] = thresholds
    if max_tokens:
        changes["max_tokens"] = max_tokens
    return replace(scenario, **changes)

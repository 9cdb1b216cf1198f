"""What a drill records: the thresholds, one ``Drill`` per kill, which requests needed which service."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.load.samples import Sample
from suite import services

FALLBACK = " (fallback)"  # how load/fault_drill.py names a request the gateway served from the other model
# The services each request of the drill's load needs on its normal path (load/fault_drill.py names).
ROUTES: dict[str, tuple[str, ...]] = {
    "chat": ("gateway", "inference-chat"),
    "code": ("gateway", "inference-code"),
    "embeddings": ("gateway", "embedding"),
    "rag query": ("rag", "embedding"),  # retrieval only
    "tools read_file": ("tools",),
    "tools memory_search": ("tools", "memory"),
}


# Services whose cold start is longer than the others', and by how much they may take to come back.
# The embedding service's start is import-bound: it was `import sentence_transformers` (torch,
# transformers, scikit-learn, scipy: 6.5 s on a quiet 2-core box, 31 s while the drill's load kept both
# cores on inference; ready again in 12 s in one run, 36 s in the next). Since issue 32 MiniLM loads on
# transformers alone (suite.embedding.plain: 0.60x the start measured on a busy box); the budget stays
# until quiet-box figures are in (docs/benchmarks.md, "Embedding service cold start").
RECOVERY_BY_SERVICE = {"embedding": 60.0}


def parse_recovery(text: str) -> dict[str, float]:
    """``"embedding:60,rag:20"`` as ``{"embedding": 60.0, "rag": 20.0}``; ValueError says what is wrong.
    A colon, not ``=``: papermill skips a parameter line with a second ``=``."""
    out: dict[str, float] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition(":")
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not sep or not name.strip() or seconds <= 0:
            raise ValueError(f"recovery budget {item!r}: write SERVICE:SECONDS, e.g. embedding:60")
        out[name.strip()] = seconds
    return out


@dataclass(frozen=True)
class Thresholds:
    recovery_s: float = 30.0  # ready again within (the CPU default)
    inference_error_ratio: float = 0.05  # failed share of affected requests while an inference service is down
    give_up_s: float = 90.0  # not ready by then: the drill stops (NO-GO)
    recovery_by_service: dict[str, float] = field(default_factory=lambda: dict(RECOVERY_BY_SERVICE))

    def recovery_for(self, service: str) -> float:
        return self.recovery_by_service.get(service, self.recovery_s)


@dataclass
class Drill:
    """One kill and what followed."""

    service: str
    phase: int
    pid: int
    killed_at: float  # epoch seconds
    ready_at: float | None = None
    new_pid: int | None = None
    not_ready: list[str] = field(default_factory=list)  # services of the phase not ready again
    restarted: list[str] = field(default_factory=list)  # dependants that are new processes
    outage_end: float = 0.0  # ready again, or when the drill gave up on it
    samples: list[Sample] = field(default_factory=list)  # requests that needed it during the outage
    around: list[Sample] = field(default_factory=list)  # every request of the timeline window
    log_tail: str = ""
    routes: dict[str, tuple[str, ...]] | None = None  # request name -> parts it needs (default: ROUTES)

    def attribute(self, samples: list[Sample], margin_s: float) -> None:
        """Sort the load's requests: those that needed this service during its outage, and every one
        of the window (``margin_s`` either side) for the timeline. Only finished requests have a
        sample, so this is done again once the load has stopped."""
        self.samples = affected(samples, self.service, self.killed_at, self.outage_end, self.routes)
        self.around = [s for s in samples if s.start < self.outage_end + margin_s
                       and s.end > self.killed_at - margin_s]

    @property
    def recovery_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.killed_at

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if not s.ok]

    @property
    def error_ratio(self) -> float:
        return len(self.failed) / len(self.samples) if self.samples else 0.0

    @property
    def served_by_fallback(self) -> int:
        return sum(1 for s in self.samples if s.ok and s.name.endswith(FALLBACK))

    def summary(self) -> str:
        back = f"ready again in {self.recovery_s:.1f} s" if self.recovery_s is not None else "NOT restored"
        return (f"{self.service}: {back}; {len(self.failed)}/{len(self.samples)} affected requests failed, "
                f"{self.served_by_fallback} served by the other model")


def affected(samples: list[Sample], service: str, start: float, end: float,
             routes: dict[str, tuple[str, ...]] | None = None) -> list[Sample]:
    """Requests whose normal path needs ``service`` and that were in flight during [start, end]."""
    routes = ROUTES if routes is None else routes
    return [s for s in samples if service in routes.get(s.name.removesuffix(FALLBACK), ())
            and s.start < end and s.end > start]


def dependants(service: str, phase: int) -> list[str]:
    """Services of the phase that need ``service``, directly or through another."""
    found: list[str] = []
    for spec in services.for_phase(phase):  # table order is dependency order
        if service in spec.depends_on or any(d in found for d in spec.depends_on):
            found.append(spec.name)
    return found

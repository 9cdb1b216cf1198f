"""Which upstream serves a model alias, in what order, and which upstreams are cooling down."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from suite.settings import Settings

ALIASES = ("chat", "code")  # the model names clients send; one inference service each


@dataclass
class Upstream:
    alias: str
    service: str
    base_url: str
    failed_at: float | None = None


@dataclass
class Router:
    upstreams: dict[str, Upstream]
    fallback: dict[str, str]
    cooldown_s: float
    clock: callable = field(default=time.monotonic)

    @classmethod
    def from_settings(cls, settings: Settings) -> Router:
        ups = {alias: Upstream(alias, f"inference-{alias}", settings.url(f"inference-{alias}")) for alias in ALIASES}
        return cls(ups, dict(settings.gateway.fallback), settings.gateway.cooldown_s)

    def aliases(self) -> list[str]:
        return list(self.upstreams)

    def chain(self, alias: str) -> list[Upstream]:
        """The alias's upstream then its fallbacks, cooling ones moved last (never dropped)."""
        order, seen = [], set()
        while alias in self.upstreams and alias not in seen:
            seen.add(alias)
            order.append(self.upstreams[alias])
            alias = self.fallback.get(alias, "")
        warm = [u for u in order if not self.cooling(u)]
        return warm + [u for u in order if self.cooling(u)]

    def cooling(self, upstream: Upstream) -> bool:
        return upstream.failed_at is not None and self.clock() - upstream.failed_at < self.cooldown_s

    def mark_failed(self, upstream: Upstream) -> None:
        upstream.failed_at = self.clock()

    def mark_ok(self, upstream: Upstream) -> None:
        upstream.failed_at = None

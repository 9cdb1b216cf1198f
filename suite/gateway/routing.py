"""Which replica serves a model alias, in what order, and which replicas are out of rotation.

A model alias (``chat``, ``code``) is served by a **pool** of one or more replicas: by default the
alias's own inference service, or the URLs of ``gateway.pools``. A request's plan is its pool's
replicas in rotation, least busy first, then the fallback alias's pool, then every replica out of
rotation (tried last, never dropped: a pool that is wholly down still gets a chance to answer).

*Least busy* is the replica's share of its capacity in use: the requests this gateway has in flight
there (counted live), plus what the replica itself last reported as busy beyond those (other
clients' work, from its ``/metrics`` or llama-server's ``/slots``), over its slots (1 when it reports
none, which makes the rule least-in-flight). Ties go round-robin, so an idle pool still spreads.

A replica leaves the rotation on a transport error or a 5xx (**ejected**) and comes back when its
``/ready`` passes (**readmitted**; probed by the gateway), never just because time passed: a replica
still loading its model would take a request and fail it. Only one whose ready path cannot be probed
(it answers 4xx: a path that needs a key, or none) is readmitted ``cooldown_s`` after it failed.
A replica that answered 429 stays in rotation but is tried after those that did not, for its
``Retry-After``: it gets less traffic, and a client gets its 429 only when no replica had room.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from suite.settings import ReplicaConfig, Settings

ALIASES = ("chat", "code")  # the model names clients send; one inference service each


@dataclass
class Capacity:
    """What a replica last reported about its own load (``suite.gateway.probes``)."""

    slots: int  # sequences it runs at once
    busy: int  # generating or waiting, from every client
    ours_then: int  # this gateway's in-flight requests there when the report was read


@dataclass
class Replica:
    alias: str
    name: str  # metric label and /health key: the service name for the default pool of one
    base_url: str
    ready_path: str = "/ready"
    load_probe: str = "auto"
    failed_at: float | None = None
    busy_until: float = 0.0  # answered 429: tried after the others until then
    in_flight: int = 0
    capacity: Capacity | None = None

    @property
    def service(self) -> str:  # the name the gateway used before pools; kept for log lines and probes
        return self.name

    def load(self) -> float:
        """Share of the replica's capacity in use, as far as the gateway knows."""
        if self.capacity is None:
            return float(self.in_flight)
        others = max(0, self.capacity.busy - self.capacity.ours_then)
        return (self.in_flight + others) / max(1, self.capacity.slots)


def replica_name(alias: str, cfg: ReplicaConfig, settings: Settings, index: int) -> str:
    if cfg.name:
        return cfg.name
    own = f"inference-{alias}"
    if cfg.url.rstrip("/") == settings.url(own):
        return own
    parts = urlsplit(cfg.url)
    return f"{own}@{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}" if parts.hostname \
        else f"{own}-{index + 1}"


@dataclass
class Router:
    pools: dict[str, list[Replica]]
    fallback: dict[str, str]
    cooldown_s: float
    clock: Callable[[], float] = field(default=time.monotonic)
    _turn: dict[str, itertools.count] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> Router:
        pools: dict[str, list[Replica]] = {}
        for alias in ALIASES:
            configured = settings.gateway.pools.get(alias) or [ReplicaConfig(url=settings.url(f"inference-{alias}"))]
            pools[alias] = [Replica(alias, replica_name(alias, cfg, settings, i), cfg.url.rstrip("/"),
                                    cfg.ready_path, cfg.load_probe) for i, cfg in enumerate(configured)]
        names = [r.name for pool in pools.values() for r in pool]
        if len(set(names)) != len(names):
            raise ValueError(f"gateway.pools: replica names must be unique (got {', '.join(names)})")
        return cls(pools, dict(settings.gateway.fallback), settings.gateway.cooldown_s)

    def aliases(self) -> list[str]:
        return list(self.pools)

    @property
    def upstreams(self) -> dict[str, Replica]:
        """Each alias's first replica (what ``/v1/models`` names as the alias's upstream)."""
        return {alias: pool[0] for alias, pool in self.pools.items()}

    def replicas(self) -> list[Replica]:
        return [r for pool in self.pools.values() for r in pool]

    # -- order ----------------------------------------------------------------------------------
    def plan(self, alias: str) -> list[Replica]:
        """Every replica that may serve ``alias``, in the order to try them: the alias's pool in
        rotation (least busy first, then those that answered 429), the fallback aliases' pools the
        same way, then every replica out of rotation, longest out first."""
        chain, seen = [], set()
        while alias in self.pools and alias not in seen:
            seen.add(alias)
            chain.append(alias)
            alias = self.fallback.get(alias, "")
        now = self.clock()
        order, out = [], []
        for a in chain:
            rotation = [r for r in self.pools[a] if not self.cooling(r)]
            out += [r for r in self.pools[a] if self.cooling(r)]
            turn = next(self._turn.setdefault(a, itertools.count()))
            n = len(self.pools[a])
            index = {id(r): i for i, r in enumerate(self.pools[a])}
            rotation.sort(key=lambda r: (r.busy_until > now, r.load(), (index[id(r)] - turn) % n))
            order += rotation
        out.sort(key=lambda r: r.failed_at or 0.0)
        return order + out

    # -- state ----------------------------------------------------------------------------------
    def cooling(self, replica: Replica) -> bool:
        """Out of rotation (ejected, not readmitted yet)."""
        return replica.failed_at is not None

    def cooled_down(self, replica: Replica) -> bool:
        """Out of rotation for ``cooldown_s`` or longer."""
        return replica.failed_at is not None and self.clock() - replica.failed_at >= self.cooldown_s

    def mark_failed(self, replica: Replica) -> bool:
        """Take ``replica`` out of rotation; True when it was in rotation until now (an ejection)."""
        ejected = not self.cooling(replica)
        replica.failed_at = self.clock()
        return ejected

    def mark_ok(self, replica: Replica) -> bool:
        """Back in rotation; True when it was out until now (a readmission)."""
        readmitted = replica.failed_at is not None
        replica.failed_at = None
        return readmitted

    def mark_busy(self, replica: Replica, retry_after_s: float) -> None:
        """It answered 429: tried after the others for ``retry_after_s`` (at most ``cooldown_s``)."""
        replica.busy_until = self.clock() + min(max(retry_after_s, 0.0), max(self.cooldown_s, 1.0))

    def state(self, replica: Replica) -> str:
        if self.cooling(replica):
            return "cooling"
        return "busy" if replica.busy_until > self.clock() else "ok"

"""Read a service's ``/metrics`` directly (no Prometheus needed): snapshots, their differences, and
percentiles from histogram buckets the way PromQL's ``histogram_quantile`` computes them.

Used by the load runbook's server-side view (a snapshot before and after each scenario, gauges
sampled while it runs) and by the pool drill (a replica's counters). It lives in ``harness.load``,
beside its main user, so ``harness.monitor`` (above: its alert drill drives a load) is the only
one of the two packages that imports the other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.httpclient import verify

Labels = tuple[tuple[str, str], ...]


@dataclass
class Snapshot:
    """Every sample of one scrape: ``values[(sample name, sorted labels)] = value``."""

    service: str
    taken: float
    values: dict[tuple[str, Labels], float] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error

    def get(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, tuple(sorted(labels.items()))))

    def select(self, name: str, **match: str) -> dict[Labels, float]:
        """Samples named ``name`` whose labels include ``match`` (a value starting with ``!`` excludes)."""
        out = {}
        for (n, labels), value in self.values.items():
            if n != name:
                continue
            d = dict(labels)
            if all((d.get(k) != v[1:]) if v.startswith("!") else (d.get(k) == v) for k, v in match.items()):
                out[labels] = value
        return out

    def total(self, name: str, **match: str) -> float:
        return sum(self.select(name, **match).values())

    @property
    def started(self) -> float | None:
        """The process start time (``process_start_time_seconds``): a change means a restart."""
        return self.get("process_start_time_seconds")


def parse(service: str, text: str, taken: float | None = None) -> Snapshot:
    snap = Snapshot(service, taken or time.time())
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            snap.values[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return snap


def scrape(service: str, url: str, client: httpx.Client | None = None, timeout: float = 5.0) -> Snapshot:
    """``GET url`` (a ``/metrics`` URL); an unreachable service gives a snapshot with ``error`` set."""
    try:
        resp = (client or httpx).get(url, timeout=timeout)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        return Snapshot(service, time.time(), error=f"{type(exc).__name__}: {exc}"[:200])
    return parse(service, resp.text)


def delta(before: Snapshot, after: Snapshot, name: str, absent: float | None = 0.0, **match: str) -> float | None:
    """Increase of a counter (summed over matching series); ``absent`` when no series matches (a
    label value that never occurred is 0; a metric the service does not have at all may be None);
    None when the process restarted in between (its counters began again) or a scrape failed."""
    if not (before.ok and after.ok) or before.started != after.started:
        return None
    if not after.select(name, **match):
        return absent
    return after.total(name, **match) - before.total(name, **match)


def bucket_deltas(before: Snapshot, after: Snapshot, histogram: str, **match: str) -> dict[float, float]:
    """Cumulative bucket counts added between two snapshots, by upper bound (``+Inf`` = inf)."""
    out: dict[float, float] = {}
    if not (before.ok and after.ok) or before.started != after.started:
        return out
    for snap, sign in ((after, 1.0), (before, -1.0)):
        for labels, value in snap.select(f"{histogram}_bucket", **match).items():
            bound = float(dict(labels)["le"])
            out[bound] = out.get(bound, 0.0) + sign * value
    return dict(sorted(out.items()))


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile``: linear interpolation inside the bucket holding rank q·count (the
    lowest bucket from 0); the highest finite bound when the rank falls in +Inf; None without data."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    count = buckets[bounds[-1]]
    if count <= 0 or not math.isinf(bounds[-1]):
        return None
    rank = q * count
    lower, below = 0.0, 0.0
    for bound in bounds:
        cumulative = buckets[bound]
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            if cumulative == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower


def scrape_all(urls: dict[str, str], timeout: float = 5.0) -> dict[str, Snapshot]:
    with httpx.Client(verify=verify()) as client:
        return {name: scrape(name, url, client, timeout) for name, url in urls.items()}


def maxima(snapshots: Iterable[Snapshot], name: str, **match: str) -> float | None:
    values = [s.total(name, **match) for s in snapshots if s.ok and s.select(name, **match)]
    return max(values) if values else None

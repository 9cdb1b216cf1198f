"""What a replica says about its own load: busy slots and waiting requests, read the way it reports them.

- ours (``suite.inference``'s batched engine): ``/metrics`` gauges ``inference_slots``,
  ``inference_active_slots`` and ``inference_queue_depth``;
- llama.cpp's ``llama-server``: ``/metrics`` (with ``--metrics``) ``llamacpp:requests_processing`` and
  ``llamacpp:requests_deferred``, its slot count from ``/props`` (``total_slots``); or ``/slots``
  (one entry per slot, ``is_processing``).

``auto`` tries ``/metrics`` then ``/slots`` and remembers which answered; a replica that reports
neither (llama_cpp.server's serial app, a proxy) is balanced on the gateway's in-flight count alone.
Only the few lines needed are read from ``/metrics``, not the whole exposition parsed: the probe runs
every ``gateway.load_probe_s`` against each replica of every pool of two or more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

OURS = ("inference_slots", "inference_active_slots", "inference_queue_depth")
LLAMACPP = ("llamacpp:requests_processing", "llamacpp:requests_deferred")


@dataclass(frozen=True)
class Load:
    slots: int
    busy: int  # generating plus waiting


def gauges(text: str, names: tuple[str, ...]) -> dict[str, float]:
    """The summed value of each named metric in a Prometheus text exposition (labels ignored)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=-1)
        name = line[:name_end] if name_end >= 0 else line
        if name in names:
            try:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
    return out


def from_metrics(text: str) -> tuple[str, Load | None, int]:
    """(kind, load, busy) from a ``/metrics`` body: kind ``ours`` with the load, ``llamacpp`` with the
    busy count only (its slots come from ``/props``), or ``""`` when neither reports here."""
    ours = gauges(text, OURS)
    if "inference_slots" in ours:
        busy = int(ours.get("inference_active_slots", 0) + ours.get("inference_queue_depth", 0))
        return "ours", Load(int(ours["inference_slots"]), busy), busy
    theirs = gauges(text, LLAMACPP)
    if LLAMACPP[0] in theirs:
        return "llamacpp", None, int(sum(theirs.values()))
    return "", None, 0


def from_slots(body: bytes) -> Load | None:
    """llama-server's ``/slots``: one object per slot, busy when ``is_processing`` (older builds: a
    non-zero ``state``)."""
    try:
        slots = json.loads(body)
    except ValueError:
        return None
    if not isinstance(slots, list) or not slots or not all(isinstance(s, dict) for s in slots):
        return None
    busy = sum(1 for s in slots if s.get("is_processing", bool(s.get("state", 0))))
    return Load(len(slots), busy)


def total_slots(body: bytes) -> int | None:
    """llama-server's ``/props`` ``total_slots``."""
    try:
        value = json.loads(body).get("total_slots")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and value > 0 else None

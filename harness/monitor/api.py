"""The few HTTP API calls the harness makes to Prometheus (v1) and Alertmanager (v2)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import httpx

TIMEOUT_S = 10.0


class MonitorApiError(RuntimeError):
    """Prometheus or Alertmanager answered with an error (or not at all)."""


def _get(url: str, params: dict[str, Any] | None = None) -> Any:
    try:
        resp = httpx.get(url, params=params, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise MonitorApiError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        raise MonitorApiError(f"GET {url}: HTTP {resp.status_code} {resp.text[:300]}")
    body = resp.json()
    if isinstance(body, dict) and body.get("status") == "error":
        raise MonitorApiError(f"GET {url}: {body.get('errorType')}: {body.get('error')}")
    return body


def ready(base: str) -> bool:
    """``/-/ready`` answers 200 (both Prometheus and Alertmanager have it)."""
    try:
        return httpx.get(f"{base}/-/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def targets(prometheus: str) -> list[dict[str, Any]]:
    """Active targets: ``labels`` (service, phase, job, instance), ``health`` (up/down/unknown), ``lastError``."""
    return _get(f"{prometheus}/api/v1/targets", {"state": "active"})["data"]["activeTargets"]


def rules(prometheus: str) -> list[dict[str, Any]]:
    """Every loaded rule (alerting rules carry ``name``, ``state``, ``health``, ``duration``)."""
    groups = _get(f"{prometheus}/api/v1/rules")["data"]["groups"]
    return [rule for g in groups for rule in g["rules"]]


def query(prometheus: str, expr: str) -> list[tuple[dict[str, str], float]]:
    """An instant vector query: (labels, value) per series; NaN values are left out."""
    data = _get(f"{prometheus}/api/v1/query", {"query": expr})["data"]
    if data["resultType"] != "vector":
        raise MonitorApiError(f"{expr!r} returned a {data['resultType']}, not a vector")
    out = []
    for item in data["result"]:
        value = float(item["value"][1])
        if not math.isnan(value):
            out.append((item["metric"], value))
    return out


def alerts(prometheus: str) -> list[dict[str, Any]]:
    """Prometheus' pending and firing alerts (``labels``, ``state``, ``activeAt``)."""
    return _get(f"{prometheus}/api/v1/alerts")["data"]["alerts"]


def am_alerts(alertmanager: str) -> list[dict[str, Any]]:
    """Alerts Alertmanager holds (``labels``, ``status.state``, ``startsAt``, ``endsAt``)."""
    return _get(f"{alertmanager}/api/v2/alerts")


def wait_for(condition: Callable[[], Any], deadline_s: float, every_s: float = 0.5) -> tuple[Any, float]:
    """Poll ``condition`` until it returns something truthy or the deadline passes: (value, seconds)."""
    t0 = time.monotonic()
    while True:
        try:
            value = condition()
        except MonitorApiError:
            value = None
        if value or time.monotonic() - t0 > deadline_s:
            return value, round(time.monotonic() - t0, 1)
        time.sleep(every_s)

"""Monitoring a stack from a target file: each part's ``metrics_url`` read with its key and parsed as
Prometheus text (what a Prometheus scraping it would get). Our own suite's monitoring (Prometheus
and Alertmanager against it, the rules, the alert drill, the log scan) is ``harness.monitor.checks``.
"""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from harness.result import CheckResult, Stage, Status, Timer
from harness.target import Target, TargetError, headers

STAGE = Stage.MONITORING


def check_metrics(target: Target) -> list[CheckResult]:
    """One ``monitor.metrics.<part>`` per part: scraped and parsed, or not applicable without a URL."""
    out = []
    for part in target.parts():
        cid, title = f"monitor.metrics.{part.name}", f"{part.name}: Prometheus metrics"
        t = Timer()
        if not part.metrics_url:
            out.append(CheckResult.skipped(cid, title, STAGE, measured="not applicable",
                                   detail="not applicable: the target gives this part no metrics_url", **t.fields()))
            continue
        goal = "HTTP 200, Prometheus text with at least one metric family"
        try:
            r = httpx.get(part.metrics_url, headers=headers(target, part, "admin"), timeout=20.0)
            families = list(text_string_to_metric_families(r.text)) if r.status_code == 200 else []
        except (httpx.HTTPError, TargetError, ValueError) as exc:
            out.append(CheckResult(cid, title, STAGE, Status.FAIL, target=goal, measured="not scraped",
                                   detail=f"{part.metrics_url}: {type(exc).__name__}: {exc}"[:400], **t.fields()))
            continue
        ok = r.status_code == 200 and bool(families)
        out.append(CheckResult(cid, title, STAGE, Status.PASS if ok else Status.FAIL, target=goal,
                               measured=f"{len(families)} families" if ok else f"HTTP {r.status_code}",
                               detail=f"{part.metrics_url}: " + (", ".join(f.name for f in families[:10]) if ok
                                                                 else r.text[:200]), **t.fields()))
    return out


def not_applicable(target: Target, check_id: str, title: str) -> CheckResult:
    return CheckResult.skipped(check_id, title, STAGE, measured="not applicable",
                       detail=f"not applicable: {title} is the suite's own (its rules, its logs, its supervisor); "
                              f"target {target.name} is scraped part by part above")

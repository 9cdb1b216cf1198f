"""The Grafana dashboard compose provisions (``deploy/monitoring/grafana/dashboards/suite.json``),
generated so its PromQL stays next to the rules' and every panel can be checked by ``promtool``.

Rows: services (targets up, readiness, request rate, p95, gateway 5xx ratio), inference engines
(waiting line, busy slots, TTFT p95, tokens/s, 429s), processes (RSS, CPU), GPU (DCGM exporter:
memory used, utilisation) and logs (Loki: ERROR/CRITICAL lines). A ``service`` variable filters the
per-service panels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.monitor.rules import up
from suite.fsio import write_json
from suite.settings import project_root

SHIPPED = project_root() / "deploy" / "monitoring" / "grafana" / "dashboards" / "suite.json"
PROM = {"type": "prometheus", "uid": "prometheus"}
LOKI = {"type": "loki", "uid": "loki"}
SVC = 'service=~"$service"'
NOT_PROBE = 'route!="/ready"'

# (title, unit, [(expr, legend)]) per row; every expr is PromQL unless the row says Loki
ROWS: list[tuple[str, dict, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    ("Services", PROM, [
        ("Targets up", "none", [(up(SVC), "{{service}}")]),
        ("Ready (last probe)", "none", [(f"service_ready{{{SVC}}}", "{{service}}")]),
        ("Requests / s", "reqps",
         [(f"sum by (service) (rate(http_requests_total{{{SVC},{NOT_PROBE}}}[1m]))", "{{service}}")]),
        ("p95 latency", "s",
         [("histogram_quantile(0.95, sum by (service, le) "
           f"(rate(http_request_duration_seconds_bucket{{{SVC},{NOT_PROBE}}}[5m])))", "{{service}}")]),
        ("Gateway 5xx ratio", "percentunit",
         [('sum(rate(http_requests_total{service="gateway",status=~"5.."}[5m])) '
           '/ sum(rate(http_requests_total{service="gateway"}[5m]))', "5xx")]),
        ("Responses by status class", "reqps",
         [(f'sum by (service, status) (rate(http_requests_total{{{SVC},{NOT_PROBE},status=~"[45].."}}[5m]))',
           "{{service}} {{status}}")]),
    ]),
    ("Inference", PROM, [
        ("Waiting line", "none", [(f"inference_queue_depth{{{SVC}}}", "{{service}}")]),
        ("Busy slots", "none", [(f"inference_active_slots{{{SVC}}}", "{{service}} busy"),
                                (f"inference_slots{{{SVC}}}", "{{service}} slots")]),
        ("Time to first token p95", "s",
         [("histogram_quantile(0.95, sum by (service, le) "
           f"(rate(inference_time_to_first_token_seconds_bucket{{{SVC}}}[5m])))", "{{service}}")]),
        ("Tokens / s", "none",
         [(f"sum by (service) (rate(inference_tokens_generated_total{{{SVC}}}[1m]))", "{{service}}")]),
        ("Refused (429) / s", "reqps",
         [(f"sum by (service) (rate(inference_rejected_total{{{SVC}}}[5m]))", "{{service}}")]),
    ]),
    ("Processes", PROM, [
        ("Resident memory", "bytes", [(f'process_resident_memory_bytes{{job="suite",{SVC}}}', "{{service}}")]),
        ("CPU (cores)", "none", [(f'rate(process_cpu_seconds_total{{job="suite",{SVC}}}[1m])', "{{service}}")]),
    ]),
    ("GPU", PROM, [
        ("GPU memory used", "percentunit",
         [("DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)", "GPU {{gpu}} {{modelName}}")]),
        ("GPU utilisation", "percent", [("DCGM_FI_DEV_GPU_UTIL", "GPU {{gpu}}")]),
    ]),
    ("Logs", LOKI, [
        ("ERROR/CRITICAL lines / 5 min", "none",
         [('sum by (service) (count_over_time({service=~"$service", level=~"ERROR|CRITICAL"}[5m]))',
           "{{service}}")]),
    ]),
]


def _panel(pid: int, title: str, unit: str, ds: dict, exprs: list[tuple[str, str]], x: int, y: int) -> dict:
    return {
        "id": pid, "type": "timeseries", "title": title, "datasource": ds,
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": e, "legendFormat": legend, "datasource": ds}
                    for i, (e, legend) in enumerate(exprs)],
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict] = []
    pid, y = 1, 0
    for row_title, ds, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (title, unit, exprs) in enumerate(row):
            panels.append(_panel(pid, title, unit, ds, exprs, (i % 3) * 8, y + (i // 3) * 8))
            pid += 1
        y += ((len(row) + 2) // 3) * 8
    panels.append({"id": pid, "type": "logs", "title": "Newest ERROR/CRITICAL lines", "datasource": LOKI,
                   "gridPos": {"h": 10, "w": 16, "x": 0, "y": y},
                   "targets": [{"refId": "A", "datasource": LOKI,
                                "expr": '{service=~"$service", level=~"ERROR|CRITICAL"}'}],
                   "options": {"showTime": True, "sortOrder": "Descending", "wrapLogMessage": True}})
    panels.append({"id": pid + 1, "type": "alertlist", "title": "Alerts",
                   "gridPos": {"h": 10, "w": 8, "x": 16, "y": y},
                   "options": {"alertInstanceLabelFilter": "", "stateFilter": {"firing": True, "pending": True},
                               "viewMode": "list", "maxItems": 20}})
    return {
        "uid": "suite-workbench", "title": "Suite Workbench", "tags": ["suite"], "editable": False,
        "schemaVersion": 39, "version": 1, "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "service", "label": "service", "type": "query", "datasource": PROM,
            "query": {"query": 'label_values(up{job=~"suite|qdrant"}, service)', "refId": "service"},
            "definition": 'label_values(up{job=~"suite|qdrant"}, service)',
            "multi": True, "includeAll": True, "allValue": ".*", "refresh": 2,
            "current": {"text": "All", "value": "$__all"}}]},
        "panels": panels,
    }


def promql_exprs() -> list[str]:
    """Every PromQL expression of the dashboard, ``$service`` as its all-value (for promtool)."""
    return [e.replace("$service", ".*") for _, ds, row in ROWS if ds is PROM
            for _, _, exprs in row for e, _ in exprs]


def write_dashboard(path: Path = SHIPPED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json(path, dashboard())

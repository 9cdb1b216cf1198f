"""Monitoring: Prometheus + Alertmanager configuration and rules from the settings, the real
binaries started against the running suite, PromQL queries, the alert drill, ``/metrics`` scrapes
for the server-side view of load, and the log scan.

``config`` / ``rules`` render files; ``promtool`` checks and unit-tests rules; ``stack`` runs
Prometheus and Alertmanager on loopback with a scratch data dir; ``checks`` turns what they see into
``CheckResult`` records for the monitoring runbook; ``scrape`` reads a service's ``/metrics``;
``logscan`` counts ERROR/CRITICAL log lines.
"""

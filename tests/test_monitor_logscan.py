"""Log scan: ERROR/CRITICAL lines since the run began, per service, newest first, from log files
written by the services' own JSON formatter."""

import json
import logging
from datetime import UTC, datetime, timedelta

from harness.monitor.logscan import run_started, scan_logs
from harness.result import Status
from suite.web.logs import JsonFormatter


def write_log(path, service, entries):
    """entries: (seconds ago, level, message[, exception]) written through the real formatter."""
    fmt = JsonFormatter(service)
    now = datetime.now(UTC).timestamp()
    lines = []
    for ago, level, msg, *exc in entries:
        record = logging.LogRecord("suite", getattr(logging, level), __file__, 1, msg, None, None)
        record.created, record.msecs = now - ago, 0
        if exc:
            try:
                raise exc[0]
            except Exception:
                import sys

                record.exc_info = sys.exc_info()
        lines.append(fmt.format(record))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_counts_errors_since_the_run_began_per_service_newest_first(tmp_path):
    since = datetime.now(UTC) - timedelta(minutes=10)
    logs = {
        "gateway": write_log(tmp_path / "gateway.log", "gateway", [
            (3600, "ERROR", "before the run"), (300, "INFO", "fine"), (200, "ERROR", "upstream chat failed"),
            (100, "CRITICAL", "out of memory"), (50, "WARNING", "slow")]),
        "rag": write_log(tmp_path / "rag.log", "rag", [(30, "ERROR", "embedding down", ValueError("boom"))]),
        "memory": write_log(tmp_path / "memory.log", "memory", [(20, "INFO", "ok")]),
        "tools": tmp_path / "never-started.log",
    }
    result = scan_logs(logs, since, tmp_path / "out" / "log_errors.json", newest=2)
    assert result.status is Status.WARN
    assert result.measured == "3 line(s) in 2 service(s)"
    assert "gateway 2, rag 1" in result.detail and "no log file for: tools" in result.detail
    shown = result.detail.splitlines()[1:3]
    assert "rag ERROR: embedding down | ValueError: boom" in shown[0] and "out of memory" in shown[1]
    assert "before the run" not in result.detail and "upstream chat failed" not in result.detail  # not among newest 2
    evidence = json.loads((tmp_path / "out" / "log_errors.json").read_text())
    assert evidence["counts"] == {"gateway": 2, "rag": 1, "memory": 0, "tools": 0}
    assert [e["msg"].split(" |")[0] for e in evidence["lines"]] == ["embedding down", "out of memory",
                                                                      "upstream chat failed"]
    assert scan_logs(logs, since, fail_on_errors=True).status is Status.FAIL


def test_a_raw_traceback_counts_and_a_clean_log_passes(tmp_path):
    since = datetime.now(UTC) - timedelta(minutes=5)
    log = write_log(tmp_path / "embedding.log", "embedding", [(10, "INFO", "starting")])
    with open(log, "a") as fh:  # the interpreter died after logging was set up
        fh.write("Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: CUDA out of memory\n")
    result = scan_logs({"embedding": log}, since)
    assert result.measured == "2 line(s) in 1 service(s)"
    assert "RAW: RuntimeError: CUDA out of memory" in result.detail
    clean = write_log(tmp_path / "clean.log", "memory", [(10, "INFO", "ok"), (5, "WARNING", "slow")])
    assert scan_logs({"memory": clean}, since).status is Status.PASS


def test_run_start_comes_from_run_json_or_an_hour_ago():
    assert run_started({"started_at": "2026-11-22T04:49:52+00:00"}) == datetime(2026, 11, 22, 4, 49, 52, tzinfo=UTC)
    by_hand = run_started(None)
    assert timedelta(minutes=59) < datetime.now(UTC) - by_hand < timedelta(minutes=61)

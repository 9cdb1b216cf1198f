"""The one colour palette: status colours for notebook tables, the report and every chart."""

from __future__ import annotations

from harness.result import Status

STATUS_COLORS: dict[Status, str] = {
    Status.PASS: "#1a7f37",
    Status.FAIL: "#cf222e",
    Status.WARN: "#9a6700",
    Status.SKIP: "#57606a",
    Status.INFO: "#0969da",  # shown, never judged
    Status.INDETERMINATE: "#bc4c00",  # not a pass and not proven a failure: orange, apart from warn's amber
    Status.PENDING: "#57606a",
    Status.RUNNING: "#57606a",
    Status.NOT_RUN: "#8250df",  # not grey: a runbook that never ran must not read like a skip
}
WAIVED_COLOR = "#bc4c00"  # a failure accepted by a waiver: neither the pass green nor the fail red
ACCENT = "#0969da"  # neutral series (histograms, plain bars)
MUTED = "#8c959f"  # context that is not judged (warm-up samples, reference lines)


def status_color(status: Status | str) -> str:
    return STATUS_COLORS[Status.parse(status)]


def status_css() -> str:
    """``.s-<status>`` rules for HTML that shows statuses (the report)."""
    return " ".join([*(f".s-{s.value} {{ color: {c}; font-weight: 700; }}" for s, c in STATUS_COLORS.items()),
                     f".s-waived {{ color: {WAIVED_COLOR}; font-weight: 700; }}"])

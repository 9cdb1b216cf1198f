"""The monitoring binaries (Debian's ``prometheus`` / ``prometheus-alertmanager`` packages or the
upstream names) and ``promtool``'s rule checks as ``CheckResult`` records.

Absent binaries are a ``skip`` carrying the install hint, never a pass.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from harness.result import CheckResult, Stage, Status, timed

INSTALL_HINT = ("apt-get install --no-install-recommends prometheus prometheus-alertmanager "
                "(scripts/install.sh does it when run as root with apt)")
NAMES = {"prometheus": ("prometheus",), "promtool": ("promtool",),
         "alertmanager": ("prometheus-alertmanager", "alertmanager"), "amtool": ("amtool",)}
STAGE = Stage.MONITORING


def binary(tool: str) -> str | None:
    """Path of ``tool`` (prometheus, promtool, alertmanager, amtool), or None when not installed."""
    return next((p for p in map(shutil.which, NAMES[tool]) if p), None)


def missing(*tools: str) -> list[str]:
    return [t for t in tools if binary(t) is None]


def skipped(cid: str, title: str, absent: list[str]) -> CheckResult:
    return CheckResult.skipped(cid, title, STAGE, target="binaries installed",
                       measured=f"not installed: {', '.join(absent)}", detail=INSTALL_HINT)


def version(tool: str) -> str:
    path = binary(tool)
    if path is None:
        return "absent"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def run_promtool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    path = binary("promtool")
    if path is None:
        raise FileNotFoundError(f"promtool is not installed: {INSTALL_HINT}")
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=timeout)


def check_rules(rules: Path) -> CheckResult:
    """``promtool check rules``: the file parses and every expression is valid PromQL."""
    if missing("promtool"):
        return skipped("monitor.rules.check", "promtool check rules", ["promtool"])
    with timed() as t:
        proc = run_promtool("check", "rules", str(rules))
    text = (proc.stdout + proc.stderr).strip()
    found = next((ln.strip() for ln in text.splitlines() if "rules found" in ln), text[-200:])
    return CheckResult("monitor.rules.check", "promtool check rules", STAGE,
                       Status.PASS if proc.returncode == 0 else Status.FAIL, target="valid rule file",
                       measured=found, evidence=[str(rules)], detail=text[-1500:], **t.fields())


def rule_unit_tests(unit_tests: Path) -> CheckResult:
    """``promtool test rules``: every alert fires when it should and stays quiet when it should not."""
    if missing("promtool"):
        return skipped("monitor.rules.test", "promtool test rules", ["promtool"])
    with timed() as t:
        proc = run_promtool("test", "rules", str(unit_tests))
    text = (proc.stdout + proc.stderr).strip()
    failed = sorted(set(re.findall(r"alertname: (\w+)", text)))
    detail = (f"failing alerts: {', '.join(failed)}\n" if failed else "") + text[-1500:]
    return CheckResult("monitor.rules.test", "promtool test rules (alert unit tests)", STAGE,
                       Status.PASS if proc.returncode == 0 else Status.FAIL, target="every unit test passes",
                       measured="SUCCESS" if proc.returncode == 0 else "FAILED", evidence=[str(unit_tests)],
                       detail=detail, **t.fields())

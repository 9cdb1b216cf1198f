"""Security scans of the code and the installed environment, for CI and for the report.

* **Bandit** over ``suite/`` and ``harness/``: a MEDIUM or HIGH finding fails unless
  ``bandit_accepted.toml`` (beside this module) accepts it with a reason; LOW findings are counted.
* **pip-audit** of the installed environment: a dependency with a known vulnerability fails. When the
  advisory source cannot be reached — no network, or PyPI's JSON API answering "not found" for every
  package, which pip-audit reports as "No known vulnerabilities found" — the scan says so and is
  **skipped**, never passed.

``python -m harness.security.scans [--json FILE] [--paths ...]`` prints one line per scan and exits 1
when one fails (``scripts/test.sh`` runs it); the security runbook records the same results and
writes them to ``security/scans.json`` of the run, which the report's environment section shows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.result import CheckResult, Stage, Status
from suite.fsio import write_json as write_json_file
from suite.settings import project_root

ACCEPTED_FILE = Path(__file__).with_name("bandit_accepted.toml")
FAILING = ("MEDIUM", "HIGH")
UNREACHABLE = ("ConnectionError", "ConnectTimeout", "Max retries", "Name or service not known", "Temporary failure",
               "timed out", "Network is unreachable", "SSLError", "ProxyError")


@dataclass
class ScanResult:
    name: str  # bandit | pip-audit
    status: str  # pass | fail | skip
    summary: str
    findings: list[dict[str, Any]] = field(default_factory=list)

    def check(self) -> CheckResult:
        return CheckResult(f"security.scan.{self.name.replace('-', '_')}", f"{self.name} scan", Stage.SECURITY,
                           Status.parse(self.status), target=TARGETS[self.name], measured=self.summary.split(";")[0],
                           detail=self.summary + "".join(f"; {_one_line(f)}" for f in self.findings[:10]))


TARGETS = {"bandit": "no MEDIUM/HIGH finding outside harness/security/bandit_accepted.toml",
           "pip-audit": "no installed package with a known vulnerability"}


def _one_line(finding: dict[str, Any]) -> str:
    return " ".join(str(finding.get(k, "")) for k in ("severity", "test", "where", "package", "version", "id",
                                                      "text") if finding.get(k))


# -- bandit ---------------------------------------------------------------------------------------
def load_accepted(path: Path = ACCEPTED_FILE) -> list[dict[str, str]]:
    entries = tomllib.loads(path.read_text(encoding="utf-8")).get("accepted", [])
    for e in entries:
        if not {"test", "file", "why"} <= set(e) or not str(e["why"]).strip():
            raise ValueError(f"{path}: every accepted finding needs test, file and a reason (why): {e}")
    return entries


def judge_bandit(report: dict[str, Any], accepted: list[dict[str, str]], root: Path) -> ScanResult:
    """Bandit's JSON report against the accepted list."""
    unaccepted, accepted_n, low = [], 0, 0
    for r in report.get("results", []):
        where = _relative(r["filename"], root)
        if r["issue_severity"] not in FAILING:
            low += 1
            continue
        if any(e["test"] == r["test_id"] and e["file"] == where for e in accepted):
            accepted_n += 1
            continue
        unaccepted.append({"severity": r["issue_severity"], "test": r["test_id"],
                           "where": f"{where}:{r['line_number']}", "text": r["issue_text"]})
    errors = report.get("errors", [])
    status = "fail" if unaccepted or errors else "pass"
    summary = (f"{len(unaccepted)} unaccepted MEDIUM/HIGH; {accepted_n} accepted (each with a reason in "
               f"{ACCEPTED_FILE.name}); {low} LOW")
    if errors:
        summary += f"; {len(errors)} file(s) bandit could not scan: " + ", ".join(e.get("filename", "?")
                                                                            for e in errors[:5])
    return ScanResult("bandit", status, summary, unaccepted)


def _relative(filename: str, root: Path) -> str:
    path = Path(filename)
    try:
        return str((path if path.is_absolute() else root / path).resolve().relative_to(root.resolve()))
    except ValueError:
        return filename


def bandit_scan(paths: list[str] | None = None, root: Path | None = None,
                accepted_file: Path = ACCEPTED_FILE) -> ScanResult:
    root = root or project_root()
    paths = paths or ["suite", "harness"]
    proc = subprocess.run([sys.executable, "-m", "bandit", "-q", "-r", *paths, "-f", "json"], cwd=root,
                          capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return ScanResult("bandit", "fail", f"bandit did not run (exit {proc.returncode}): "
                                            f"{(proc.stderr or proc.stdout).strip()[-300:]}")
    return judge_bandit(report, load_accepted(accepted_file), root)


# -- pip-audit ------------------------------------------------------------------------------------
def judge_pip_audit(report: dict[str, Any] | None, exit_code: int, stderr: str) -> ScanResult:
    """pip-audit's JSON (and exit) as pass / fail / skip, never a silent pass."""
    if report is None:
        if any(marker in stderr for marker in UNREACHABLE):
            return ScanResult("pip-audit", "skip", "skipped: the advisory source could not be reached "
                                                   f"({_last_line(stderr)})")
        return ScanResult("pip-audit", "fail", f"pip-audit did not run (exit {exit_code}): {_last_line(stderr)}")
    deps = report.get("dependencies", [])
    vulnerable = [{"package": d["name"], "version": d.get("version", ""), "id": v.get("id", ""),
                   "text": "fix: " + (", ".join(v.get("fix_versions") or []) or "none yet")}
                  for d in deps for v in d.get("vulns", [])]
    audited = [d for d in deps if "skip_reason" not in d]
    if vulnerable:
        return ScanResult("pip-audit", "fail", f"{len(vulnerable)} known vulnerabilit(y/ies) in "
                                               f"{len({v['package'] for v in vulnerable})} package(s)", vulnerable)
    if deps and not audited:
        return ScanResult("pip-audit", "skip", f"skipped: the advisory source could not be reached — none of the "
                                               f"{len(deps)} installed packages could be looked up "
                                               f"({deps[0]['skip_reason'][:120]})")
    unaudited = len(deps) - len(audited)
    return ScanResult("pip-audit", "pass", f"{len(audited)} packages audited, no known vulnerability"
                                           + (f"; {unaudited} not on the index (not audited)" if unaudited else ""))


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def pip_audit_scan(timeout_s: int = 10) -> ScanResult:
    cmd = [sys.executable, "-m", "pip_audit", "-f", "json", "--progress-spinner", "off", "--desc", "off",
           "--timeout", str(timeout_s), "--skip-editable"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return ScanResult("pip-audit", "skip", "skipped: the advisory source did not answer within 600 s")
    try:
        report = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        report = None
    return judge_pip_audit(report, proc.returncode, proc.stderr)


class PendingScans:
    """Both scans started at once, in the background (each is a subprocess): ``PendingScans()`` early,
    ``.result()`` when the results are needed, so the scans' seconds overlap other work."""

    def __init__(self, paths: list[str] | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="scan")
        self._futures = [self._pool.submit(bandit_scan, paths), self._pool.submit(pip_audit_scan)]

    def result(self) -> list[ScanResult]:
        try:
            return [f.result() for f in self._futures]
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)


def run_scans(paths: list[str] | None = None) -> list[ScanResult]:
    return PendingScans(paths).result()


def write_json(results: list[ScanResult], path: Path) -> Path:
    """The scans as JSON (the run's ``security/scans.json``, read by the report)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_file(path, [asdict(r) for r in results], indent=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.security.scans", description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--paths", nargs="*", help="what Bandit scans (default: suite harness)")
    args = parser.parse_args(argv)
    results = run_scans(args.paths)
    for r in results:
        print(f"{r.name}: {r.status.upper()} — {r.summary}")
        for f in r.findings:
            print(f"  {_one_line(f)}")
    if args.json:
        write_json(results, args.json)
    return 1 if any(r.status == "fail" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The library runbooks call. Every check returns a ``CheckResult``."""

from harness.result import CheckResult, Status, load_results, save_results

__all__ = ["CheckResult", "Status", "load_results", "save_results"]

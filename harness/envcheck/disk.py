"""Free disk space where the data directory lives."""

import shutil
from pathlib import Path

from harness.result import CheckResult, timed


def check_disk(path: Path, min_gb: float) -> CheckResult:
    with timed() as t:
        probe = Path(path)
        while not probe.exists():
            probe = probe.parent
        free_gb = shutil.disk_usage(probe).free / 1e9
    return CheckResult("env.disk", "Free disk space", "environment", "pass" if free_gb >= min_gb else "fail",
                       target=f">= {min_gb:g} GB", measured=f"{free_gb:.1f} GB", detail=str(probe), **t.fields())

"""Free disk space where the data directory lives."""

import shutil
from pathlib import Path

from harness.result import CheckResult, Stage, Status, timed


def check_disk(path: Path, min_gb: float) -> CheckResult:
    with timed() as t:
        probe = Path(path)
        while not probe.exists():
            probe = probe.parent
        free_gb = shutil.disk_usage(probe).free / 1e9
    return CheckResult("env.disk", "Free disk space", Stage.ENVIRONMENT,
                       Status.PASS if free_gb >= min_gb else Status.FAIL, target=f">= {min_gb:g} GB",
                       value=round(free_gb, 1), unit="GB", detail=str(probe), **t.fields())

"""Python interpreter version."""

import platform
import sys

from harness.result import CheckResult, Stage, Status, timed


def check_python(minimum: tuple[int, int] = (3, 11)) -> CheckResult:
    with timed() as t:
        ok = sys.version_info[:2] >= minimum
    return CheckResult("env.python", "Python version", Stage.ENVIRONMENT, Status.PASS if ok else Status.FAIL,
                       target=f">= {minimum[0]}.{minimum[1]}", measured=platform.python_version(),
                       detail=sys.executable, **t.fields())

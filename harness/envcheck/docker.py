"""Docker engine >= 20.10 and Compose >= 2.0; skipped with a reason when absent and not required."""

import re
import shutil
import subprocess

from harness.result import CheckResult, Stage, Status, timed


def _version(text: str) -> tuple[int, ...]:
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def check_docker(required: bool) -> CheckResult:
    absent = Status.FAIL if required else Status.SKIP
    with timed() as t:
        docker = shutil.which("docker")
        if docker is None:
            return CheckResult("env.docker", "Docker engine and Compose", Stage.ENVIRONMENT, absent,
                               target="engine >= 20.10, compose >= 2.0", measured="no docker client",
                               detail="process backend in use" if not required else "the docker backend needs Docker",
                               **t.fields())
        try:
            engine = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"],
                                    capture_output=True, text=True, timeout=20)
            compose = subprocess.run([docker, "compose", "version", "--short"],
                                     capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return CheckResult("env.docker", "Docker engine and Compose", Stage.ENVIRONMENT, absent,
                               target="engine answers", measured="timeout", **t.fields())
    if engine.returncode != 0 or not engine.stdout.strip():
        return CheckResult("env.docker", "Docker engine and Compose", Stage.ENVIRONMENT, absent,
                           target="engine >= 20.10, compose >= 2.0", measured="client only, no engine",
                           detail=(engine.stderr.strip().splitlines() or [""])[-1][:200], **t.fields())
    ev, cv = engine.stdout.strip(), compose.stdout.strip() if compose.returncode == 0 else "absent"
    ok = _version(ev) >= (20, 10) and _version(cv) >= (2, 0)
    return CheckResult("env.docker", "Docker engine and Compose", Stage.ENVIRONMENT, Status.PASS if ok else absent,
                       target="engine >= 20.10, compose >= 2.0", measured=f"engine {ev}, compose {cv}",
                       **t.fields())

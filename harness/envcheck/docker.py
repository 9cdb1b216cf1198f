"""Docker engine >= 20.10 and Compose >= 2.0 (seed 001), read from the engine's API (the ``docker`` SDK)
and the Compose plugin; skipped with a reason when absent and not required (the process backend)."""

from harness.result import CheckResult, Stage, Status, timed
from suite.containers import engine

TARGET = (f"engine >= {'.'.join(map(str, engine.ENGINE_MIN))}, "
          f"compose >= {'.'.join(map(str, engine.COMPOSE_MIN))}")


def check_docker(required: bool) -> CheckResult:
    absent = Status.FAIL if required else Status.SKIP
    with timed() as t:
        v = engine.versions()
    base = dict(id="env.docker", title="Docker engine and Compose", stage=Stage.ENVIRONMENT, target=TARGET)
    if v.engine is None:
        return CheckResult(**base, status=absent, measured=f"no engine answers; compose {v.compose or 'absent'}",
                           detail="the docker backend needs an engine: `suite engine start`" if required
                           else "process backend in use", **t.fields())
    ok = v.ok
    short = [] if ok else [f"{what} {have or 'absent'} below {'.'.join(map(str, need))}"
                           for what, have, need in (("engine", v.engine, engine.ENGINE_MIN),
                                                    ("compose", v.compose, engine.COMPOSE_MIN))
                           if have is None or engine.version_tuple(have) < need]
    return CheckResult(**base, status=Status.PASS if ok else absent,
                       measured=f"engine {v.engine} (API {v.api}), compose {v.compose or 'absent'}",
                       detail="; ".join(short), **t.fields())

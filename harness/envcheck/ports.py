"""The suite's ports are free, or held by our own running suite (as ``suite status`` reports it,
whichever backend is configured)."""

from harness import stack
from harness.result import CheckResult, Stage, Status, timed
from suite import services
from suite.net import port_free, port_holder
from suite.settings import Settings


def check_ports(settings: Settings, phase: int) -> CheckResult:
    specs = services.for_phase(phase)
    ports = [settings.port(s.name) for s in specs]
    target = "free or held by our suite: " + ", ".join(map(str, ports))
    with timed() as t:
        busy = [s for s in specs if not port_free(settings.host, settings.port(s.name))]
        try:
            ours = stack.running(settings) if busy else {}
        except (OSError, RuntimeError) as exc:
            return CheckResult("env.ports", "Service ports available", Stage.ENVIRONMENT, Status.FAIL,
                               target=target, measured="suite status failed", detail=str(exc)[:500],
                               **t.fields())
        mine = [f"{settings.port(s.name)} ({s.name})" for s in busy if s.name in ours]
        taken = [f"{settings.port(s.name)} for {s.name} held by {port_holder(settings.port(s.name)) or 'another process'}"
                 for s in busy if s.name not in ours]
    free = len(specs) - len(busy)
    return CheckResult(
        "env.ports", "Service ports available", Stage.ENVIRONMENT, Status.FAIL if taken else Status.PASS,
        target=target, measured=f"{free} free, {len(mine)} ours, {len(taken)} taken",
        detail="; ".join(taken) or ("ours: " + ", ".join(mine) if mine else "all free"), **t.fields())

"""The suite's ports are free, or held by our own running suite."""

from harness.result import CheckResult, timed
from suite import services
from suite.net import port_free, port_holder
from suite.settings import Settings
from suite.supervisor.process import ProcessBackend


def check_ports(settings: Settings, phase: int) -> CheckResult:
    with timed() as t:
        backend = ProcessBackend(settings)
        free, ours, taken = [], [], []
        for spec in services.for_phase(phase):
            port = settings.port(spec.name)
            if port_free(settings.host, port):
                free.append(port)
            elif backend.pid_of(spec.name):
                ours.append(f"{port} ({spec.name})")
            else:
                taken.append(f"{port} for {spec.name} held by {port_holder(port) or 'another process'}")
    ports = [settings.port(s.name) for s in services.for_phase(phase)]
    return CheckResult(
        "env.ports", "Service ports available", "environment", "fail" if taken else "pass",
        target="free or held by our suite: " + ", ".join(map(str, ports)),
        measured=f"{len(free)} free, {len(ours)} ours, {len(taken)} taken",
        detail="; ".join(taken) or ("ours: " + ", ".join(ours) if ours else "all free"), **t.fields())

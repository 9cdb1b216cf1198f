"""Bring services up and down: a tiny backend contract with process and docker implementations."""

from suite.supervisor.base import Backend, PortInUse, ServiceFailed, ServiceState, SupervisorError


def get_backend(settings) -> Backend:
    if settings.backend == "docker":
        from suite.supervisor.docker import DockerBackend

        return DockerBackend(settings)
    from suite.supervisor.process import ProcessBackend

    return ProcessBackend(settings)


__all__ = ["Backend", "ServiceState", "SupervisorError", "PortInUse", "ServiceFailed", "get_backend"]

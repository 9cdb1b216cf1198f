"""The docker backend's liveness watch: ``python -m suite.supervisor.docker_watch --settings-file F``.

The engine restarts a container whose process exits (``restart: on-failure``) but not one that is alive
and hung: its healthcheck only marks it unhealthy (and compose uses that to gate start order, nothing
more). This watch does for the containers what supervisord's watch does for processes: it probes every
running service's ``/health`` each ``supervision.liveness_interval_s``; after
``supervision.liveness_failures`` failures in a row (with the start period) it records why in
``<data_dir>/supervisor/docker-kills.jsonl`` and SIGKILLs the service's process in its container, so
the restart policy brings it back and ``suite status`` shows the exit and the cause.

``suite up`` starts it (pid file ``<data_dir>/pids/docker-watch.pid``, log ``<data_dir>/logs/docker-watch.log``);
``suite down`` stops it with the last service. It exits by itself when the project has no container left.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from datetime import UTC, datetime

import httpx

from suite import services, tls
from suite.supervisor.base import probe
from suite.supervisor.docker import DockerBackend, _watch_paths
from suite.supervisor.liveness import Liveness, watch_main_settings

log = logging.getLogger("suite.supervisor.docker_watch")


def _started_at(container) -> float:
    text = container.attrs["State"].get("StartedAt", "")[:19]
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return time.time()


def watch_once(backend: DockerBackend, liveness: Liveness, http: httpx.Client) -> int:
    """One round over the project's containers; the number of suite containers seen running."""
    sup = backend.settings.supervision
    seen = 0
    for name, c in backend.containers().items():
        if name not in services.BY_NAME:
            continue
        if c.status != "running" or c.attrs["State"].get("Restarting"):
            liveness.forget(name)
            continue
        seen += 1
        spec = services.get(name)
        ok, detail = probe(backend.settings.url(name) + spec.health_path, timeout=sup.liveness_timeout_s,
                           client=http)
        # one instance per start: a restarted container keeps its id, and its new process gets the
        # start period again
        failed = liveness.observe(name, (c.id, c.attrs["State"].get("StartedAt")), _started_at(c), ok)
        if not ok and liveness.failures.get(name):
            log.warning("liveness: %s /health failed (%d/%d): %s", name, liveness.failures[name],
                        sup.liveness_failures, detail)
        if failed:
            kill(backend, name, c, f"killed by the liveness watch: {failed} failed /health probes in a row, "
                                   f"last: {detail}")
    return seen


def kill(backend: DockerBackend, name: str, container, cause: str) -> None:
    journal = _watch_paths(backend.settings)[2]
    journal.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.now(UTC)
    with open(journal, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"container": container.id, "service": name, "time": now.timestamp(),
                             "finished_after": now.isoformat(timespec="seconds")[:19], "cause": cause}) + "\n")
    log.error("liveness: %s (container %s): %s", name, container.name, cause)
    try:
        backend.kill(name)
    except Exception as exc:  # it exited meanwhile
        log.warning("liveness: killing %s: %s", name, exc)


def record_exits(backend: DockerBackend, stop: threading.Event) -> None:
    """Every ``die`` of the project's containers, as the engine streams it, appended to
    ``<data_dir>/supervisor/docker-exits.jsonl`` (the engine keeps only its last 256 events, which the
    healthchecks' own exec events fill within seconds; a restart resets the container's ExitCode)."""
    path = _watch_paths(backend.settings)[2].with_name("docker-exits.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    while not stop.is_set():
        try:
            for event in backend.client.events(decode=True, filters={
                    "type": "container", "event": "die", "label": "com.docker.compose.project=suite"}):
                attrs = event.get("Actor", {}).get("Attributes", {})
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"container": event.get("id") or event.get("Actor", {}).get("ID"),
                                         "service": attrs.get("com.docker.compose.service"),
                                         "exit_code": attrs.get("exitCode"), "time": event.get("time")}) + "\n")
                if stop.is_set():
                    return
        except Exception:  # the engine restarting: reconnect
            log.exception("event stream broke; reconnecting")
            stop.wait(2)


def main(argv: list[str] | None = None) -> None:
    settings = watch_main_settings("python -m suite.supervisor.docker_watch", argv)
    backend = DockerBackend(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    liveness, http = Liveness(settings.supervision), httpx.Client(verify=tls.client_context(settings))
    threading.Thread(target=record_exits, args=(backend, stop), name="exits", daemon=True).start()
    empty_rounds = 0
    log.info("watching the %s project's containers every %gs", "suite", settings.supervision.liveness_interval_s)
    while not stop.wait(settings.supervision.liveness_interval_s):
        try:
            seen = watch_once(backend, liveness, http)
        except Exception:  # the engine restarting, a container gone mid-round: try again next round
            log.exception("watch round failed")
            continue
        empty_rounds = 0 if seen or backend.containers() else empty_rounds + 1
        if empty_rounds >= 3:
            log.info("no container of the project left; exiting")
            break


if __name__ == "__main__":
    main()

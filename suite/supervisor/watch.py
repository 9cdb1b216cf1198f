"""The watch: supervisord's event listener for the suite (``python -m suite.supervisor.watch``).

supervisord restarts a service that exits (``autorestart=unexpected``) with backoff on failed
starts, but it only sees exits, keeps no restart count, no start limit for a service that crashes
after it started, and does not tell listeners the exit status. The watch adds those, and runs under
supervisord itself so it lives and restarts exactly as long as the supervisor does:

* every exit is recorded (time, exit code or signal, restarts so far) in ``exits.jsonl`` and the
  per-service ``state.json`` that ``suite status`` reads;
* start limit (systemd ``StartLimitBurst``): more than ``start_limit_burst`` automatic restarts
  within ``start_limit_interval_s`` and the service is stopped and marked as having hit it;
* liveness: a thread probes ``/health`` of every RUNNING service; after ``liveness_failures``
  failures in a row (a hung event loop times out, a dead or stuck inference engine answers 503) the
  service gets SIGKILL, which supervisord sees as an unexpected exit and restarts. A service that
  has not yet answered once since it started is left alone during ``liveness_start_period_s``.

The event protocol runs on stdin/stdout (``supervisor.childutils``); logs go to stderr, which
supervisord writes to ``logs/supervisor-watch.log``.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import xmlrpc.client

import httpx
from supervisor import childutils

from suite import services, tls
from suite.settings import Settings
from suite.supervisor import journal
from suite.supervisor.base import probe
from suite.supervisor.journal import Exit, ServiceRecord
from suite.supervisor.liveness import Liveness, watch_main_settings
from suite.supervisor.supervisord import Client, fault_code, paths

log = logging.getLogger("suite.supervisor.watch")


class Watch:
    """State kept between events; one lock because the liveness thread records causes too."""

    def __init__(self, settings: Settings, client_factory) -> None:
        self.settings = settings
        self.paths = paths(settings)
        self.client_factory = client_factory
        self.client = client_factory()
        self.lock = threading.Lock()
        self.records: dict[str, ServiceRecord] = journal.read_state(self.paths.state)
        self.causes: dict[str, str] = {}  # why the watch itself killed a service, until its exit is seen
        self.log_offset = self._log_size()

    # -- events ---------------------------------------------------------------------------------
    def on_event(self, event: str, payload: dict[str, str]) -> None:
        name = payload.get("processname", "")
        if name not in services.BY_NAME:
            return
        state, before = event.removeprefix("PROCESS_STATE_"), payload.get("from_state", "")
        with self.lock:
            rec = self.records.setdefault(name, ServiceRecord())
            if state in ("EXITED", "BACKOFF"):
                self._record_exit(name, rec, payload)
            elif state == "STARTING" and before in ("EXITED", "BACKOFF"):
                self._restarted(name, rec)
            elif state == "STARTING":  # started by `suite up`: a fresh start clears a start limit
                rec.start_limit, rec.restart_times = "", []
            elif state == "FATAL":
                rec.start_limit = rec.start_limit or (f"gave up after {self.settings.supervision.start_retries} "
                                                      "failed starts in a row")
            else:
                return
            journal.write_state(self.paths.state, self.records)

    def _record_exit(self, name: str, rec: ServiceRecord, payload: dict[str, str]) -> None:
        line = self._exit_line(name)
        pid = int(payload["pid"]) if payload.get("pid", "").isdigit() else None
        expected = payload.get("expected") == "1" if "expected" in payload else bool(line and line.expected)
        exit_ = Exit(service=name, time=line.time if line else time.time(), pid=pid,
                     exit_code=line.exit_code if line else None, signal=line.signal if line else None,
                     expected=expected, cause=self.causes.pop(name, ""), restarts=rec.restarts)
        rec.last_exit = exit_
        journal.append_exit(self.paths.journal, exit_)
        log.warning("%s exited: %s (restarts so far %d)", name, exit_.describe(), rec.restarts)

    def _restarted(self, name: str, rec: ServiceRecord) -> None:
        sup = self.settings.supervision
        now = time.time()
        rec.restarts += 1
        rec.restart_times = [t for t in rec.restart_times if now - t < sup.start_limit_interval_s] + [now]
        if len(rec.restart_times) <= sup.start_limit_burst:
            return
        rec.start_limit = (f"start limit hit: {len(rec.restart_times)} restarts within "
                           f"{sup.start_limit_interval_s:g}s (limit {sup.start_limit_burst})")
        log.error("%s: %s; not restarting it again", name, rec.start_limit)
        try:
            self.client.call("stopProcess", name, False)
        except xmlrpc.client.Fault as exc:
            log.warning("stopping %s after its start limit: %s", name, fault_code(exc))

    def _exit_line(self, name: str) -> journal.ExitLine | None:
        """supervisord's log line for the service's latest exit (written before the event was sent;
        read again briefly in case the write is not visible yet)."""
        for _ in range(5):
            found = None
            for line in self._new_log_lines():
                parsed = journal.parse_exit_line(line)
                if parsed and parsed.service == name:
                    found = parsed
            if found:
                return found
            time.sleep(0.1)
        return None

    def _log_size(self) -> int:
        try:
            return self.paths.log.stat().st_size
        except FileNotFoundError:
            return 0

    def _new_log_lines(self) -> list[str]:
        size = self._log_size()
        if size < self.log_offset:  # rotated
            self.log_offset = 0
        try:
            with open(self.paths.log, "rb") as fh:
                fh.seek(self.log_offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        cut = data.rfind(b"\n") + 1  # a half-written last line waits for the next read
        self.log_offset += cut
        return data[:cut].decode("utf-8", errors="replace").splitlines()

    # -- liveness -------------------------------------------------------------------------------
    def liveness_loop(self, stop: threading.Event) -> None:
        client = self.client_factory()  # its own connection: this runs beside the event loop
        sup = self.settings.supervision
        liveness = Liveness(sup)
        http = httpx.Client(verify=tls.client_context(self.settings))
        while not stop.wait(sup.liveness_interval_s):
            try:
                infos = client.infos()
            except (OSError, xmlrpc.client.Error) as exc:
                log.warning("liveness: supervisord did not answer: %s", exc)
                continue
            for name, info in infos.items():
                if info["statename"] != "RUNNING":
                    liveness.forget(name)
                    continue
                spec = services.get(name)
                ok, detail = probe(self.settings.url(name) + spec.health_path, timeout=sup.liveness_timeout_s,
                                   client=http)
                failed = liveness.observe(name, info["pid"], info["start"], ok)
                if not ok and liveness.failures.get(name):
                    log.warning("liveness: %s /health failed (%d/%d): %s", name, liveness.failures[name],
                                sup.liveness_failures, detail)
                if failed:
                    self._kill_unresponsive(client, name, info["pid"], f"{failed} failed /health "
                                            f"probes in a row, last: {detail}")

    def _kill_unresponsive(self, client: Client, name: str, pid: int, why: str) -> None:
        with self.lock:
            self.causes[name] = f"killed by the liveness watch: {why}"
        log.error("liveness: killing %s (pid %d): %s", name, pid, why)
        try:
            client.call("signalProcess", name, "KILL")
        except xmlrpc.client.Fault as exc:  # it exited meanwhile
            log.warning("liveness: signalling %s: %s", name, fault_code(exc))
            with self.lock:
                self.causes.pop(name, None)


def main(argv: list[str] | None = None) -> None:
    settings = watch_main_settings("python -m suite.supervisor.watch", argv)
    sock = paths(settings).socket
    watch = Watch(settings, lambda: Client(sock, timeout_s=10))
    stop = threading.Event()
    threading.Thread(target=watch.liveness_loop, args=(stop,), name="liveness", daemon=True).start()
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            watch.on_event(headers.get("eventname", ""), childutils.get_headers(payload))
        except Exception:  # a bug here must not stop the event flow (supervisord would queue forever)
            log.exception("handling %s failed", headers.get("eventname"))
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()

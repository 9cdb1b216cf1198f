"""Process backend: the services run under supervisord, which restarts them (see ``supervisord``).

``up`` refuses ports held by others, starts supervisord when it is not running, then starts the
services of the phase in dependency waves and waits for each wave's readiness as before; a service
that exits while ``up`` waits fails the call, and what the call started is stopped again. ``down``
stops services in reverse dependency order, and supervisord once none is left. ``status`` reads
supervisord's process table plus the watch's record of exits and restarts.
"""

from __future__ import annotations

import json
import time
import xmlrpc.client
from pathlib import Path

from suite import services, tls
from suite.net import port_free, port_holder
from suite.settings import Settings
from suite.supervisor import journal, orphans, supervisord
from suite.supervisor.base import (
    PortInUse,
    Progress,
    ServiceState,
    SupervisorError,
    probe,
    selected,
    wait_ready,
)
from suite.supervisor.supervisord import ALIVE, Client, fault_code


class ProcessBackend:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.paths = supervisord.paths(settings)

    # -- files ----------------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        services.get(name)
        return self.settings.log_dir / f"{name}.log"

    def _tail(self, name: str, lines: int = 25) -> str:
        return supervisord.tail(self.log_path(name), lines)

    def _client(self) -> Client | None:
        return supervisord.connect(self.settings)

    def pid_of(self, name: str) -> int | None:
        """The pid of the service while supervisord runs it, else None."""
        client = self._client()
        if client is None:
            return None
        info = client.infos().get(name)
        return info["pid"] if info and info["pid"] else None

    def _configured_phase(self) -> int:
        try:
            return int(json.loads(self.paths.stack.read_text())["phase"])
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    # -- contract -------------------------------------------------------------------------------
    def up(self, phase: int, progress: Progress | None = None, only: list[str] | None = None) -> list[str]:
        say = progress or (lambda _m: None)
        specs, remote = selected(self.settings, phase, only)
        verify = tls.client_context(self.settings)
        deadline = time.monotonic() + self.settings.ready_deadline_s
        for spec in remote:  # on other hosts: started there; what runs here may need them
            say(f"  ~ {spec.name} runs at {self.settings.url(spec.name)}: waiting for it")
            took = wait_ready(spec, self.settings.url(spec.name), deadline, exited=lambda: None, progress=say,
                              log_tail=lambda: "", verify=verify)
            say(f"  ✓ {spec.name} ready in {took:.1f}s")
        if not specs:
            return []
        client = self._client()
        if client is None:
            self._replace_orphans(say)
        infos = client.infos() if client else {}
        running = {n for n, i in infos.items() if i["statename"] in ALIVE}
        todo = [s for s in specs if s.name not in running]
        for spec in todo:  # refuse before starting anything
            port = self.settings.port(spec.name)
            if not port_free(self.settings.host, port):
                raise PortInUse(spec.name, port, port_holder(port) or "another process")
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        settings_file = self.settings.dump_file(self.settings.pid_dir / "settings.json")
        if client is None:
            client = supervisord.start(self.settings, settings_file)
            say(f"  supervisord started (control socket {self.paths.socket})")
        else:
            supervisord.update(self.settings, client, settings_file)
        supervisord.write_private(self.paths.stack, json.dumps(
            {"phase": max(phase, self._configured_phase()), "at": time.time()}))
        for spec in specs:
            if spec.name in running:
                say(f"  = {spec.name} already running (pid {infos[spec.name]['pid']})")
        started: list[str] = []
        try:
            ready = set(running)
            names = {s.name for s in specs}
            while todo:
                wave = [s for s in todo if all(d in ready or d not in names for d in s.depends_on)]
                if not wave:
                    raise SupervisorError("dependency cycle among: " + ", ".join(s.name for s in todo))
                pids = {}
                for spec in wave:
                    pids[spec.name] = self._start(client, spec.name)
                    started.append(spec.name)
                    say(f"  + {spec.name} started (pid {pids[spec.name]}, port "
                        f"{self.settings.port(spec.name)}, log {self.log_path(spec.name)})")
                for spec in wave:
                    took = wait_ready(spec, self.settings.url(spec.name), deadline,
                                      exited=lambda n=spec.name, p=pids[spec.name]: self._exited(client, n, p),
                                      progress=say, log_tail=lambda n=spec.name: self._tail(n), verify=verify)
                    say(f"  ✓ {spec.name} ready in {took:.1f}s")
                    ready.add(spec.name)
                todo = [s for s in todo if s.name not in ready]
        except BaseException:
            if started:
                say("  ! start failed; stopping what this call started: " + ", ".join(started))
                self.down(started)
            raise
        return started

    def _replace_orphans(self, say: Progress) -> list[str]:
        """No supervisord answers, yet services of this data dir may run: left by one that died. They
        cannot be adopted; they are stopped cleanly so ``up`` starts them under a new supervisor."""
        found = orphans.find(self.settings)
        if not found:
            return []
        say(f"  ! supervisord of {self.settings.data_dir} is gone; these still run unsupervised: "
            f"{orphans.describe(found)}")
        stopped = orphans.stop(self.settings, found, say)
        supervisord.paths(self.settings).socket.unlink(missing_ok=True)  # the dead daemon's
        return stopped

    def _start(self, client: Client, name: str) -> int:
        try:
            client.call("startProcess", name, False)
        except xmlrpc.client.Fault as exc:
            if fault_code(exc) != "ALREADY_STARTED":
                raise SupervisorError(f"supervisord could not start {name}: {exc.faultString}") from None
        return client.call("getProcessInfo", name)["pid"]

    def _exited(self, client: Client, name: str, pid: int) -> str | None:
        """None while the process ``up`` started is alive, else how it ended."""
        info = client.call("getProcessInfo", name)
        if info["statename"] in ("STARTING", "RUNNING") and info["pid"] == pid:
            return None
        time.sleep(0.3)  # let the watch record the exit status
        exits = journal.read_exits(self.paths.journal, name, since=info["start"] - 1)
        return exits[-1].describe() if exits else info["spawnerr"] or info["statename"].lower()

    def down(self, names: list[str] | None = None) -> list[str]:
        client = self._client()
        if client is None:  # a dead supervisord's services are stopped too
            left = [o for o in orphans.find(self.settings) if names is None or o.name in names or o.name == "watch"]
            return [n for n in orphans.stop(self.settings, left) if n != "watch"]
        infos = client.infos()
        stopped = []
        for spec in reversed(services.SERVICES):
            if (names is None or spec.name in names) and infos.get(spec.name, {}).get("statename") in ALIVE:
                try:
                    client.call("stopProcess", spec.name, True)
                except xmlrpc.client.Fault as exc:
                    if fault_code(exc) != "NOT_RUNNING":
                        raise SupervisorError(f"supervisord could not stop {spec.name}: {exc.faultString}") from None
                stopped.append(spec.name)
        if not any(i["statename"] in ALIVE for i in client.infos().values()):
            supervisord.shutdown(self.settings, client)
        return stopped

    def status(self) -> list[ServiceState]:
        client = self._client()
        infos = client.infos() if client else {}
        records = journal.read_state(self.paths.state) if client else {}
        phase = self._configured_phase() if client else 0
        unsupervised = {o.name: o for o in orphans.find(self.settings)} if client is None else {}
        states = []
        verify = tls.client_context(self.settings)
        for spec in services.SERVICES:
            url = self.settings.url(spec.name)
            info, rec = infos.get(spec.name), records.get(spec.name)
            st = ServiceState(spec.name, spec.phase, url, configured=spec.phase <= phase)
            if info is not None:
                st.state = info["statename"].lower() if info["start"] else "not started"
                st.pid = info["pid"] or None
            if rec is not None:
                st.restarts = rec.restarts
                if rec.last_exit:
                    st.last_exit, st.last_exit_at = rec.last_exit.describe(), rec.last_exit.at
                if rec.start_limit and st.state in ("stopped", "fatal"):
                    st.state, st.detail = "fatal", rec.start_limit
            if spec.name in unsupervised:
                st.state, st.pid = "orphaned", unsupervised[spec.name].pid
                st.configured = True
            st.running = st.pid is not None  # starting (within start_secs), running or stopping
            if spec.name in self.settings.urls and not st.running:  # on another host: probed there
                st.state, st.configured = "remote", True
                st.healthy, health = probe(url + spec.health_path, verify=verify)
                st.ready, st.detail = probe(url + spec.ready_path, timeout=15.0, verify=verify)
            elif st.running:
                st.healthy, health = probe(url + spec.health_path, verify=verify)
                st.ready, st.detail = probe(url + spec.ready_path, timeout=15.0, verify=verify)
                if not st.healthy:
                    st.detail = f"health: {health}"
                elif st.state == "orphaned":
                    st.detail = "runs without a supervisor (supervisord died); `suite up` replaces it"
            elif not st.detail:
                st.detail = (info or {}).get("spawnerr") or ("supervisor not running" if client is None else st.state)
            states.append(st)
        return states

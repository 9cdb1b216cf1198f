"""supervisord itself killed with SIGKILL: its services run on unsupervised; ``suite status`` shows them
``orphaned`` and ``suite up`` replaces them cleanly under a new supervisord (before, it refused their
ports); ``suite down`` stops them too. Only this data dir's processes are ever touched."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from suite.supervisor import orphans, supervisord
from suite.supervisor.process import ProcessBackend
from suite.testing import service_process, stack_settings, wait_until_ready


def test_only_this_data_dirs_processes_are_found_and_down_stops_them(tmp_path):
    mine, other = stack_settings(tmp_path / "mine"), stack_settings(tmp_path / "other")
    proc = service_process(mine, "memory")
    try:
        wait_until_ready(mine, "memory", proc=proc)
        [found] = orphans.find(mine)
        assert (found.name, found.pid) == ("memory", proc.pid)
        assert orphans.find(other) == []  # another data dir's supervisor never sees it
        memory = {s.name: s for s in ProcessBackend(mine).status()}["memory"]
        assert (memory.state, memory.pid, memory.ready) == ("orphaned", proc.pid, True)
        assert "without a supervisor" in memory.detail
        assert ProcessBackend(mine).down() == ["memory"]
        assert proc.wait(timeout=30) == 0  # SIGTERM: uvicorn's clean exit
        assert orphans.find(mine) == []
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.integration
def test_up_replaces_the_services_of_a_supervisord_killed_with_sigkill(tmp_path, gemma_path):
    settings = stack_settings(tmp_path / "data", gemma_path)
    backend = ProcessBackend(settings)
    backend.up(1)
    try:
        before = {s.name: s.pid for s in backend.status()[:3]}
        daemon = int(supervisord.paths(settings).pidfile.read_text())
        os.kill(daemon, signal.SIGKILL)  # the fault: the supervisor itself dies
        assert supervisord.wait_gone(settings, 10)
        assert all(psutil.pid_exists(pid) for pid in before.values())  # the services run on, unsupervised
        states = {s.name: s for s in backend.status()}
        assert {states[n].state for n in before} == {"orphaned"}
        lines: list[str] = []
        started = backend.up(1, progress=lines.append)  # before the fix: PortInUse naming our own pid
        assert sorted(started) == sorted(before)
        assert any("run unsupervised" in line or "runs without a supervisor" in line for line in lines)
        deadline = time.monotonic() + settings.supervision.start_secs + 30
        while True:  # ready is asked over HTTP; supervisord says RUNNING only once startsecs have passed
            after = {s.name: s for s in backend.status()}
            if all(after[n].state == "running" for n in before) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        for name, pid in before.items():
            assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
            assert after[name].state == "running" and after[name].ready and after[name].pid != pid
        assert int(supervisord.paths(settings).pidfile.read_text()) != daemon
    finally:
        backend.down()
    assert supervisord.wait_gone(settings, 30)
    deadline = time.monotonic() + 10  # the watch leaves once supervisord's pipe closes
    while orphans.find(settings) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert orphans.find(settings) == []

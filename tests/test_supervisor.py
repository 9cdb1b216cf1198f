"""Process backend: refuses taken ports (naming the holder), cleans up on failure, ignores stale pids."""

import json
import os
import socket

import pytest

from suite import services
from suite.net import port_free, port_holder
from suite.supervisor import PortInUse, ServiceFailed
from suite.supervisor.process import ProcessBackend


def test_phase_table_is_in_dependency_order():
    names = [s.name for s in services.for_phase(3)]
    for spec in services.for_phase(3):
        for dep in spec.depends_on:
            assert names.index(dep) < names.index(spec.name)
    assert [s.name for s in services.for_phase(1)] == ["inference-chat", "inference-code", "gateway"]
    with pytest.raises(ValueError):
        services.for_phase(4)


def test_up_refuses_a_taken_port_and_names_it(settings):
    port = settings.port("gateway")
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not port_free("127.0.0.1", port)
        assert port_holder(port) == f"pid {os.getpid()} ({__import__('psutil').Process().name()})"
        backend = ProcessBackend(settings)
        with pytest.raises(PortInUse, match=f"port {port} for gateway .* pid {os.getpid()}"):
            backend.up(1)
    assert backend.status() and not any(st.running for st in backend.status())  # nothing was started


def test_failed_start_reports_the_log_and_stops_what_it_started(settings, tmp_path):
    bad = settings.model_copy(deep=True)
    bad.inference.code.path = tmp_path / "missing.gguf"
    backend = ProcessBackend(bad)
    with pytest.raises(ServiceFailed, match="inference-code did not become ready: process exited") as info:
        backend.up(1)
    assert "missing.gguf" in info.value.log_tail
    assert not any(st.running for st in backend.status())
    assert [p for p in bad.pid_dir.glob("*.json") if p.stem in services.BY_NAME] == []


def test_stale_pid_file_is_ignored_and_removed(settings):
    backend = ProcessBackend(settings)
    settings.pid_dir.mkdir(parents=True)
    backend.pid_file("gateway").write_text(json.dumps({"pid": os.getpid(), "port": 1}))  # not a suite.serve
    assert backend.pid_of("gateway") is None
    assert not backend.pid_file("gateway").exists()
    assert backend.down() == []

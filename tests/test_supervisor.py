"""Process backend: supervisord's config, refusal of taken ports (naming the holder), clean-up on a
failed start, and the exit records the watch reads back. Restarts of a live stack: test_supervision."""

import configparser
import os
import socket

import pytest

from suite import services
from suite.net import port_free, port_holder
from suite.supervisor import PortInUse, ServiceFailed, supervisord
from suite.supervisor.journal import Exit, parse_exit_line, read_exits
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


@pytest.mark.integration
def test_failed_start_reports_the_log_and_stops_what_it_started(settings, tmp_path):
    bad = settings.model_copy(deep=True)
    bad.inference.code.path = tmp_path / "missing.gguf"
    backend = ProcessBackend(bad)
    with pytest.raises(ServiceFailed, match="inference-code did not become ready: process exited") as info:
        backend.up(1)
    assert "missing.gguf" in info.value.log_tail
    assert not any(st.running for st in backend.status())
    assert supervisord.connect(bad) is None  # nothing left, so the supervisor went too
    assert supervisord.wait_gone(bad, 20)


def test_config_is_a_private_unix_socket_and_an_on_failure_policy(settings):
    text = supervisord.render_config(settings, settings.pid_dir / "settings.json")
    cfg = configparser.RawConfigParser()
    cfg.read_string(text)
    assert "inet_http_server" not in cfg  # never a TCP control port
    assert cfg["unix_http_server"]["file"] == str(settings.supervisor_dir / "supervisord.sock")
    assert cfg["unix_http_server"]["chmod"] == "0600" and cfg["supervisord"]["umask"] == "077"
    programs = [s[len("program:"):] for s in cfg.sections() if s.startswith("program:")]
    assert programs == [s.name for s in services.SERVICES]
    gateway = cfg["program:gateway"]
    assert gateway["command"].split()[-4:] == ["suite.serve", "gateway", "--settings-file",
                                               str(settings.pid_dir / "settings.json")]
    assert (gateway["autostart"], gateway["autorestart"], gateway["exitcodes"]) == ("false", "unexpected", "0")
    assert gateway["startretries"] == str(settings.supervision.start_retries)
    assert gateway["stdout_logfile"] == str(ProcessBackend(settings).log_path("gateway"))
    assert "suite.supervisor.watch" in cfg["eventlistener:suite-watch"]["command"]


def test_a_percent_in_a_path_survives_the_config_parser(settings, tmp_path):
    odd = settings.model_copy(update={"data_dir": tmp_path / "100%data"})
    cfg = configparser.ConfigParser()  # supervisord's parser interpolates %(name)s
    cfg.read_string(supervisord.render_config(odd, odd.pid_dir / "settings.json"))
    assert cfg["program:memory"]["stdout_logfile"] == str(odd.log_dir / "memory.log")


def test_supervisord_exit_lines_are_read_as_signal_or_code():
    killed = parse_exit_line("2026-01-02 03:04:05,678 WARN exited: embedding (terminated by SIGKILL; not expected)")
    assert (killed.service, killed.signal, killed.exit_code, killed.expected) == ("embedding", "SIGKILL", None, False)
    failed = parse_exit_line("2026-01-02 03:04:05,678 WARN exited: rag (exit status 3; not expected)")
    assert (failed.exit_code, failed.signal) == (3, None)
    assert parse_exit_line("2026-01-02 03:04:05,678 INFO spawned: 'rag' with pid 12") is None
    assert Exit("rag", 0.0, signal="SIGKILL", cause="killed by the liveness watch").describe() == \
        "signal 9 (SIGKILL); killed by the liveness watch"
    assert Exit("rag", 0.0, exit_code=1).describe() == "exit status 1"


def test_journal_skips_a_torn_line(tmp_path):
    path = tmp_path / "exits.jsonl"
    path.write_text('{"service": "rag", "time": 5.0, "signal": "SIGKILL"}\n{"service": "gat')
    [only] = read_exits(path)
    assert only.service == "rag" and only.signal == "SIGKILL"


def test_status_without_a_supervisor_lists_every_service_down(settings):
    states = ProcessBackend(settings).status()
    assert [s.name for s in states] == [s.name for s in services.SERVICES]
    assert all(not s.running and not s.configured and s.state == "not started" for s in states)
    assert ProcessBackend(settings).down() == []


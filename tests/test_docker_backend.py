"""Docker backend against a fake `docker` client (no engine can run here): the commands it sends
and how it reads `compose ps`. Readiness is still probed over real HTTP."""

import json
import os
import stat
import threading

import pytest
import uvicorn
from fastapi import FastAPI

from suite.supervisor import ServiceFailed, SupervisorError
from suite.supervisor.docker import DockerBackend

FAKE = """#!/usr/bin/env python3
import json, os, sys
log = os.environ["FAKE_DOCKER_LOG"]
with open(log, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
args = sys.argv[1:]
if os.environ.get("FAKE_DOCKER_ENVLOG"):
    with open(os.environ["FAKE_DOCKER_ENVLOG"], "a") as fh:
        fh.write(json.dumps({k: v for k, v in os.environ.items() if k.startswith("SUITE_")}) + "\\n")
if "up" in args and os.environ.get("FAKE_DOCKER_UP_RUNS"):  # the engine starts what it was asked to
    with open(os.environ["FAKE_DOCKER_RUNNING"], "a") as fh:
        fh.write(" " + " ".join(args[args.index("-d") + 1:]))
if "ps" in args:
    for name in open(os.environ["FAKE_DOCKER_RUNNING"]).read().split():
        print(json.dumps({"Service": name, "State": "running"}))
    extra = os.environ.get("FAKE_DOCKER_PS_EXTRA")
    if extra:
        print(open(extra).read())
if args[:1] == ["inspect"] and os.environ.get("FAKE_DOCKER_INSPECT"):
    print(open(os.environ["FAKE_DOCKER_INSPECT"]).read())
"""


@pytest.fixture
def fake_docker(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "docker"
    exe.write_text(FAKE)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    running = tmp_path / "running"
    running.write_text("")
    log = tmp_path / "calls"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DOCKER_RUNNING", str(running))
    return running, log


def calls(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def serve_ready_app(port):
    app = FastAPI()
    app.get("/ready")(lambda: {"status": "ready"})
    app.get("/health")(lambda: {"status": "ok"})
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    return server


def test_up_starts_missing_services_and_waits_for_readiness(settings, fake_docker):
    running, log = fake_docker
    running.write_text("inference-chat inference-code gateway")
    servers = [serve_ready_app(settings.port(n)) for n in ("inference-chat", "inference-code", "gateway")]
    try:
        backend = DockerBackend(settings)
        assert backend.up(1) == []  # all running already: nothing started
        assert not any(c[:1] == ["compose"] and "up" in c for c in calls(log))
        assert (settings.pid_dir / "settings.json").is_file()
        states = {s.name: s for s in backend.status()}
        assert states["gateway"].running and states["gateway"].ready
        assert not states["rag"].running
        assert backend.down(["gateway"]) == ["gateway"]
        stop = [c for c in calls(log) if "stop" in c][0]
        assert stop[:2] == ["compose", "-f"] and stop[-2:] == ["stop", "gateway"]
    finally:
        for s in servers:
            s.should_exit = True


def test_service_that_never_runs_fails_and_is_stopped(settings, fake_docker):
    running, log = fake_docker
    settings = settings.model_copy(update={"ready_deadline_s": 3})
    with pytest.raises(ServiceFailed, match="inference-chat did not become ready: process exited"):
        DockerBackend(settings).up(1)
    up = [c for c in calls(log) if "up" in c][0]
    assert up[-5:] == ["up", "-d", "inference-chat", "inference-code", "gateway"]


def test_missing_docker_client_is_a_clear_error(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SupervisorError, match="needs the `docker` client"):
        DockerBackend(settings).up(1)


def test_status_reads_restarts_and_the_last_exit_from_the_engine(settings, fake_docker, tmp_path, monkeypatch):
    extra, inspect = tmp_path / "ps.json", tmp_path / "inspect.json"
    extra.write_text(json.dumps({"Service": "embedding", "Name": "suite-embedding-1", "State": "restarting",
                                 "Status": "Restarting (137) 1 second ago"}))
    inspect.write_text(json.dumps([{"Name": "/suite-embedding-1", "RestartCount": 2,
                                    "State": {"ExitCode": 137, "FinishedAt": "2026-01-02T03:04:05Z"}}]))
    monkeypatch.setenv("FAKE_DOCKER_PS_EXTRA", str(extra))
    monkeypatch.setenv("FAKE_DOCKER_INSPECT", str(inspect))
    states = {s.name: s for s in DockerBackend(settings).status()}
    emb = states["embedding"]
    assert emb.configured and not emb.running and emb.state == "restarting" and emb.restarts == 2
    assert emb.last_exit == "exit status 137 (signal 9, SIGKILL)" and emb.last_exit_at.startswith("2026-01-02")
    assert not states["rag"].configured and states["rag"].detail == "not running"


def test_up_passes_the_phase_profile_ports_the_host_user_and_a_qdrant_key(settings, fake_docker, tmp_path,
                                                                           monkeypatch):
    running, log = fake_docker
    envlog = tmp_path / "env"
    monkeypatch.setenv("FAKE_DOCKER_ENVLOG", str(envlog))
    monkeypatch.setenv("FAKE_DOCKER_UP_RUNS", "1")
    servers = [serve_ready_app(settings.port(n)) for n in ("inference-chat", "inference-code", "gateway")]
    try:
        assert DockerBackend(settings).up(1) == ["inference-chat", "inference-code", "gateway"]
    finally:
        for s in servers:
            s.should_exit = True
    up = next(c for c in calls(log) if "up" in c)
    assert up[up.index("-p") + 1:] == ["suite", "--profile", "phase1", "up", "-d", "inference-chat",
                                       "inference-code", "gateway"]
    assert up.count("-f") == 1  # cpu profile: no GPU override
    env = json.loads(envlog.read_text().splitlines()[-1])
    assert env["SUITE_UID"] == str(os.getuid()) and env["SUITE_DATA_DIR"] == str(settings.data_dir)
    assert env["SUITE_PROMETHEUS_PORT"] == str(settings.port("prometheus"))
    assert env["SUITE_QDRANT_GRPC_PORT"] == str(settings.port("qdrant") + 1)
    # no key in the settings: one was made, kept owner-only, and handed to the containers' settings
    secret = settings.data_dir / "secrets" / "qdrant_api_key"
    key = secret.read_text()
    assert len(key) >= 32 and env["SUITE_QDRANT_API_KEY"] == key
    dumped = settings.pid_dir / "settings.json"
    assert json.loads(dumped.read_text())["rag"]["qdrant_api_key_file"] == str(secret)
    assert key not in dumped.read_text()
    for path in (secret, dumped, settings.data_dir / "secrets" / "grafana_admin_password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_gpu_profile_adds_the_gpu_override_and_profile(settings, fake_docker, tmp_path):
    running, log = fake_docker
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    gpu = settings.model_copy(update={"profile": "gpu"})
    backend = DockerBackend(gpu)
    assert [f.name for f in backend.compose_files()] == ["compose.yaml", "compose.gpu.yaml"]
    running.write_text("gateway")
    backend.down(["gateway"])
    stop = next(c for c in calls(log) if "stop" in c)
    assert stop.count("-f") == 2 and stop[stop.index("-f", 2) + 1].endswith("compose.gpu.yaml")


"""The docker backend on a real Docker engine: the images built without a registry, phases 1-2 in
containers (start order gated by `service_healthy`), the engine's view in `suite status`, a kill -9 of a
container's process brought back by the restart policy, a hung container killed by the liveness watch,
the hardening checks, the monitoring images. Unit tests of the pieces that need no engine first.

The integration tests start what they need: the engine (Debian's docker.io installed and dockerd started
when root with apt, stopped after if they started it), the Compose plugin (Debian's docker-compose 2.x),
the images (cached: base tarball and wheelhouse beside pip's cache dir). Without root and without an
engine they skip, saying why.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from suite import services
from suite.settings import Settings
from suite.supervisor.docker import (
    DockerBackend,
    _describe_exit,
    compose_env,
    container_user,
    ensure_secrets,
    hand_over,
    into_data_dir,
    untraversable,
)
from suite.supervisor.liveness import Liveness
from suite.testing import stack_settings

ROOT = os.geteuid() == 0


@pytest.fixture
def open_tmp():
    """A scratch folder the containers' user can reach (pytest's own base folder is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="suite-docker-test-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- units: no engine --------------------------------------------------------------------------------------
def test_compose_env_runs_containers_as_a_non_root_owner(settings, tmp_path):
    env = compose_env(settings)
    uid, gid = container_user(settings)
    assert env["SUITE_UID"] == str(uid) and env["SUITE_GID"] == str(gid) and uid != 0
    if ROOT:
        assert uid == settings.docker.container_uid == 10001
    else:
        assert uid == os.getuid()
    assert env["SUITE_DATA_DIR"] == str(settings.data_dir)
    assert env["SUITE_PROMETHEUS_PORT"] == str(settings.port("prometheus"))
    assert env["SUITE_QDRANT_GRPC_PORT"] == str(settings.port("qdrant") + 1)


def test_secrets_are_made_once_owner_only_and_named_in_the_settings(settings):
    ensure_secrets(settings)
    secret = settings.data_dir / "secrets" / "qdrant_api_key"
    key = secret.read_text()
    ensure_secrets(settings)
    assert secret.read_text() == key and len(key) >= 32
    assert settings.rag.qdrant_api_key_file == secret
    assert compose_env(settings)["SUITE_QDRANT_API_KEY"] == key
    for path in (secret, settings.data_dir / "secrets" / "grafana_admin_password"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.skipif(not ROOT, reason="chown needs root")
def test_hand_over_gives_the_data_dir_to_the_containers_user_and_spots_a_closed_parent(open_tmp):
    tmp_path = open_tmp
    data = tmp_path / "closed" / "data"
    (data / "auth").mkdir(parents=True)
    (data / "auth" / "keys.db").write_text("x")
    assert hand_over(data, 10001, 10001) == 3
    assert hand_over(data, 10001, 10001) == 0  # nothing left to change
    assert (data / "auth" / "keys.db").stat().st_uid == 10001
    os.chmod(tmp_path / "closed", 0o700)
    assert untraversable(data, 10001) == tmp_path / "closed"
    os.chmod(tmp_path / "closed", 0o711)
    assert untraversable(data, 10001) is None


def test_a_model_outside_the_data_dir_is_linked_into_it(tmp_path):
    outside = tmp_path / "elsewhere" / "m.gguf"
    outside.parent.mkdir()
    outside.write_bytes(b"GGUF" * 10)
    models = tmp_path / "data" / "models"
    inside = into_data_dir(outside, models, print)
    assert inside == models / "m.gguf" and inside.read_bytes() == outside.read_bytes()
    assert into_data_dir(inside, models, print) == inside.resolve()


def test_liveness_waits_for_the_start_period_then_counts_failures_in_a_row():
    sup = Settings().supervision.model_copy(update={"liveness_failures": 3, "liveness_start_period_s": 60})
    live = Liveness(sup)
    now = time.time()
    assert [live.observe("gateway", "c1", now, False) for _ in range(5)] == [0] * 5  # starting: left alone
    assert live.observe("gateway", "c1", now, True) == 0  # answered once: failures count from now on
    assert [live.observe("gateway", "c1", now, False) for _ in range(3)] == [0, 0, 3]
    assert live.observe("gateway", "c2", now, False) == 0  # a new container starts its own period
    # the docker watch's instance is (container id, StartedAt): a restart of the same container is new
    assert live.observe("gateway", ("c1", "t1"), now, True) == 0
    assert live.observe("gateway", ("c1", "t2"), now, False) == 0


def test_exit_codes_name_the_signal():
    assert _describe_exit(137) == "exit status 137 (signal 9, SIGKILL)"
    assert _describe_exit(1) == "exit status 1"


@pytest.mark.skipif(not ROOT, reason="apt_install runs only as root")
def test_apt_install_makes_its_log_folder_and_names_the_log_when_apt_fails(tmp_path, monkeypatch):
    # CI's first engine start: no dockerd, a fresh data dir whose logs/ folder did not exist yet (it
    # failed with FileNotFoundError before installing anything). apt-get itself is a script here: the
    # unit is where the output goes, not Debian's mirror.
    from suite.containers import engine

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text('#!/bin/sh\necho "apt-get $*"\n[ "$1" = update ] || [ -z "$FAIL" ] || exit 100\n')
    apt.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    log = tmp_path / "data" / "logs" / "dockerd.log"
    engine.apt_install(["docker.io"], log=log)
    assert "apt-get install -y -qq --no-install-recommends docker.io" in log.read_text()
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(engine.EngineError, match=str(log)):
        engine.apt_install(["docker.io"], log=log)


# -- a real engine ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from suite.containers import debs, engine, images

    data = tmp_path_factory.mktemp("engine")
    try:
        started = engine.start(data)
    except engine.EngineError as exc:
        pytest.skip(f"no Docker engine can be had here: {exc}")
    try:
        if engine.compose_version() is None:
            debs.install_compose_plugin(images.cache_dir() / "debs")
        client = engine.require_client()
        images.build_suite_image(client, print, data / "build.log")
        images.build_monitoring_images(client, print, data / "build.log")
        yield client
    finally:
        if started:
            engine.stop(data)


@pytest.fixture(scope="module")
def docker_phase2(engine, gemma_path):
    # not under pytest's base temp (0700): the containers' user must reach the data dir
    data = Path(tempfile.mkdtemp(prefix="suite-docker-phase2-", dir="/tmp"))
    settings = stack_settings(data, gemma_path, backend="docker",
                              supervision={"liveness_interval_s": 1, "liveness_timeout_s": 2,
                                           "liveness_failures": 3, "liveness_start_period_s": 120})
    backend = DockerBackend(settings)
    t0, since = time.monotonic(), time.time() - 1
    backend.up(2, progress=print)
    print(f"phase 2 in containers ready in {time.monotonic() - t0:.0f}s")
    backend.events = _events(engine, since)  # the bring-up's start and health events, for the gating test
    try:
        yield settings, backend
    finally:
        backend.down()
        assert not backend.containers(), "down leaves no container of the project"
        shutil.rmtree(data, ignore_errors=True)


def _events(client, since: float) -> list[dict]:
    """The engine's container events of the project since ``since`` (start, health_status: …)."""
    return list(client.events(since=int(since), until=int(time.time()) + 1, decode=True,
                              filters={"type": "container", "label": "com.docker.compose.project=suite"}))


def _first(events: list[dict], service: str, status: str) -> int:
    times = [e["timeNano"] for e in events if e.get("status") == status
             and e["Actor"]["Attributes"].get("com.docker.compose.service") == service]
    return min(times) if times else 1 << 80


@pytest.mark.integration
def test_phase2_runs_in_containers_gated_by_health(docker_phase2):
    settings, backend = docker_phase2
    found = backend.containers()
    names = [s.name for s in services.for_phase(2)]
    assert set(names) <= set(found) and "qdrant" not in found  # the Qdrant server has no source here
    for name in names:
        c = found[name]
        assert c.status == "running", name
        r = httpx.get(settings.url(name) + services.get(name).ready_path, timeout=10)
        assert r.status_code == 200, (name, r.text)
    # compose started each dependant only once its dependencies' healthchecks had passed (the engine's
    # own events: `start` of the dependant after the first `health_status: healthy` of each dependency)
    for name in ("gateway", "rag"):
        started = _first(backend.events, name, "start")
        for dep in services.get(name).depends_on:
            assert started > _first(backend.events, dep, "health_status: healthy") > 0, (name, dep)
            assert _first(backend.events, dep, "start") < started
    rows = {s.name: s for s in backend.status()}
    assert all(rows[n].running and rows[n].ready and rows[n].pid for n in names)
    assert rows["qdrant" if "qdrant" in rows else "gateway"].restarts == 0
    # the engine's view of the hardening asked for in compose.yaml
    info = found["gateway"].attrs
    assert info["HostConfig"]["ReadonlyRootfs"] and info["HostConfig"]["CapDrop"] == ["ALL"]
    assert info["Config"]["User"] == "{}:{}".format(*container_user(settings))
    assert info["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 5}


@pytest.mark.integration
def test_suite_down_and_up_of_one_service_from_another_process(docker_phase2):
    """What the smoke's failover and the monitoring drill do: `suite down NAME` and `suite up` as separate
    CLI processes (fresh settings: the Qdrant key compose.yaml requires is found again)."""
    from harness import stack

    settings, backend = docker_phase2
    assert stack.down(["inference-chat"], settings) == 0
    assert "inference-chat" not in backend.running() and "inference-code" in backend.running()
    outcome = stack.up(2, settings)
    assert outcome.exit_code == 0 and outcome.started == ["inference-chat"], outcome.lines[-10:]
    rows = {s.name: s for s in backend.status()}
    assert rows["inference-chat"].ready and rows["gateway"].ready


@pytest.mark.integration
def test_kill_9_of_a_container_is_restarted_by_its_policy_and_shown_in_status(docker_phase2):
    settings, backend = docker_phase2
    before = {s.name: s for s in backend.status()}
    gateway_pid = before["gateway"].pid
    pid = backend.kill("inference-code")
    t0 = time.monotonic()
    deadline = t0 + 90
    while time.monotonic() < deadline:
        row = {s.name: s for s in backend.status()}["inference-code"]
        if row.ready and row.pid != pid:
            break
        time.sleep(0.5)
    took = time.monotonic() - t0
    assert row.ready and row.pid not in (None, pid), row
    assert row.restarts == before["inference-code"].restarts + 1
    assert "SIGKILL" in row.last_exit and row.last_exit_at
    gateway = {s.name: s for s in backend.status()}["gateway"]
    assert gateway.pid == gateway_pid and gateway.ready  # its dependant was not restarted
    print(f"inference-code back in {took:.1f}s: {row.last_exit}")


@pytest.mark.integration
def test_a_hung_container_is_killed_by_the_liveness_watch_and_restarted(docker_phase2):
    settings, backend = docker_phase2
    before = {s.name: s for s in backend.status()}["embedding"]
    os.kill(before.pid, signal.SIGSTOP)  # alive, holding its port, answering nothing
    deadline = time.monotonic() + 120
    row = before
    while time.monotonic() < deadline:
        row = {s.name: s for s in backend.status()}["embedding"]
        if row.ready and row.restarts > before.restarts:
            break
        time.sleep(1)
    assert row.restarts == before.restarts + 1 and row.ready, row
    assert "killed by the liveness watch" in row.last_exit and "SIGKILL" in row.last_exit


@pytest.mark.integration
def test_hardening_checks_pass_with_evidence(docker_phase2, tmp_path):
    from harness.security import containers

    settings, _ = docker_phase2
    results = containers.review(settings, tmp_path)
    assert {r.id.rsplit(".", 1)[1] for r in results} == {
        "non_root", "read_only_rootfs", "no_new_privileges", "caps_dropped", "no_docker_socket", "loopback_only",
        "secrets_0600", "image_contents"}
    assert [r for r in results if r.status.value != "pass"] == []
    evidence = json.loads((tmp_path / "containers.json").read_text())
    gateway = evidence["containers"]["gateway"]
    assert gateway["no_new_privs"] == "1" and int(gateway["cap_eff"], 16) == 0 and gateway["uid"] != ["0"]
    image = next(iter(evidence["image"].values()))
    assert image["compilers"] == {} and image["models"] == [] and image["keys"] == []


@pytest.mark.integration
def test_monitoring_runs_from_the_debian_images(docker_phase2, open_tmp):
    from harness.monitor import api
    from harness.monitor.prometheus import MonitorStack

    settings, _ = docker_phase2
    work = open_tmp / "monitoring"
    work.mkdir()
    with_stack = MonitorStack(settings, ["gateway", "inference-chat"], work)
    with_stack.start()
    try:
        assert with_stack.in_containers and with_stack.running()
        up, _ = api.wait_for(lambda: all(t["health"] == "up" for t in api.targets(with_stack.prometheus))
                             and len(api.targets(with_stack.prometheus)) == 2, 30)
        assert up, api.targets(with_stack.prometheus)
    finally:
        with_stack.stop()
    assert not with_stack.running()


def test_engine_reused_or_skipped_is_said(tmp_path):
    """`suite engine status` answers whether or not an engine runs, and never starts one."""
    from suite.containers import engine

    v = engine.versions()
    assert (v.engine is None) or engine.version_tuple(v.engine) >= (20, 10)
    assert engine.ours(tmp_path) is None and not engine.stop(tmp_path)


@pytest.mark.integration
def test_a_container_run_the_unsafe_way_fails_every_hardening_line(engine, open_tmp):
    """The attack: root, writable root filesystem, privileges and capabilities kept, the Docker socket
    mounted, a server listening on every interface of its network namespace (not published: nothing
    of a test is reachable from outside), a compiler and a key in the image."""
    from harness.result import Timer
    from harness.security import containers
    from suite.containers.images import BASE

    socket = "/var/run/docker.sock"
    c = engine.containers.run(BASE, ["python3", "-m", "http.server", "--bind", "0.0.0.0", "0"], detach=True,
                              user="0:0", cap_add=["SYS_ADMIN"], volumes={socket: {"bind": socket, "mode": "rw"}},
                              labels={"org.suite-workbench.test": "unsafe"})
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            c.reload()
            info = containers.describe(c)
            if info["listening"]:
                break
            time.sleep(0.3)
        results = {r.id.rsplit(".", 1)[1]: r for r in containers.judge({"unsafe": info}, Timer(), [])}
        assert {k for k, r in results.items() if r.status.value == "fail"} == {
            "non_root", "read_only_rootfs", "no_new_privileges", "caps_dropped", "no_docker_socket", "loopback_only"}
        assert "process uid ['0']" in results["non_root"].detail and socket in results["no_docker_socket"].detail
        assert "0.0.0.0" in results["loopback_only"].detail
    finally:
        c.remove(force=True)
    bad = containers.judge_image("unsafe", {"compilers": {"gcc": "/usr/bin/gcc"}, "keys": ["/root/.ssh/id_rsa"],
                                            "models": [], "test_extras": ["pytest-timeout"], "user": 0}, Timer(), [])
    assert bad.status.value == "fail" and all(w in bad.detail for w in ("gcc", "id_rsa", "pytest-timeout", "root"))


@pytest.mark.integration
def test_the_dependency_image_is_kept_beside_pips_cache_and_a_fresh_engine_loads_it(engine):
    """A new CI machine keeps pip's cache, not the engine's storage: the 10-minute dependency layer comes
    back from its tarball (untagged here, as on a fresh engine) instead of being installed again."""
    from suite.containers import images

    base = images.OFFICIAL_BASE if images.present(engine, images.OFFICIAL_BASE) else images.BASE
    tag = images.deps_tag(engine, base, images.ensure_wheelhouse())
    assert [t for image in engine.images.list(name=images.DEPS) for t in image.tags] == [tag], "one deps image"
    tarball = images.deps_tarball(tag)
    assert tarball.is_file() and tarball.stat().st_size > 100e6, f"{tarball} is not the saved image"
    assert [p.name for p in images.cache_dir().glob("deps-*.tar")] == [tarball.name], "one tarball per wheelhouse"
    engine.images.remove(tag)  # the suite image still holds the layers: only the name goes
    assert not images.present(engine, tag)
    said: list[str] = []
    t0 = time.monotonic()
    assert images.ensure_deps_image(engine, base, images.ensure_wheelhouse(), said.append) == tag
    assert any("docker load" in line for line in said) and not any("docker build" in line for line in said), said
    print(f"dependency image loaded from {tarball.name} in {time.monotonic() - t0:.0f}s")

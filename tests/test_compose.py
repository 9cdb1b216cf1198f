"""The compose files: `docker compose config` with the real plugin (Debian's docker-compose 2.x, which
`suite engine start` installs) for every profile combination the README names, and a structural check
of what compose needs and what we promise (profiles per phase, healthchecks with start periods,
service_healthy dependencies, loopback only, hardening, Qdrant with an API key, GPU reservations only in
the GPU override, the Debian override's images). The container healthcheck command runs for real
against a live app. The stack itself runs on a real engine in tests/test_docker_backend.py."""

import json
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml
from fastapi import FastAPI

from suite import services
from suite.instrument import instrument
from suite.settings import Settings, project_root
from suite.supervisor.docker import compose_env
from suite.testing import ServerThread

DEPLOY = project_root() / "deploy"
COMPOSE, GPU, DEBIAN = DEPLOY / "compose.yaml", DEPLOY / "compose.gpu.yaml", DEPLOY / "compose.debian.yaml"
MONITORING = {"prometheus", "alertmanager", "loki", "promtail", "grafana"}
TOP_LEVEL = {"name", "services", "secrets", "volumes", "networks", "configs"}
SERVICE_KEYS = {"image", "build", "profiles", "command", "entrypoint", "environment", "volumes", "network_mode",
                "user", "restart", "read_only", "tmpfs", "healthcheck", "depends_on", "deploy", "secrets",
                "cap_add", "cap_drop", "security_opt", "stop_grace_period", "labels", "logging"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
# variables compose.yaml may use beyond what the backend sets (build choices, a config dir)
BY_HAND = {"SUITE_MONITORING_DIR", "SUITE_INFERENCE_BUILD_BASE", "SUITE_INFERENCE_RUNTIME_BASE", "SUITE_LLAMA_BUILD",
           "SUITE_CUDA_BUILD_BASE", "SUITE_CUDA_RUNTIME_BASE", "SUITE_BUILD_BASE"}


class _ComposeLoader(yaml.SafeLoader):
    """Compose's merge tags (`!override`, `!reset`) read as plain values."""


_ComposeLoader.add_constructor("!override", lambda loader, node: (
    loader.construct_mapping(node) if isinstance(node, yaml.MappingNode) else loader.construct_sequence(node)))
_ComposeLoader.add_constructor("!reset", lambda loader, node: None)


def load(path):
    return yaml.load(path.read_text(), Loader=_ComposeLoader)  # SafeLoader plus compose's two tags


def compose_plugin() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    return subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not compose_plugin(), reason="no `docker compose` plugin here: the structural test runs instead")
@pytest.mark.parametrize("files,profiles", [
    ([COMPOSE], ["phase1"]), ([COMPOSE], ["phase2"]), ([COMPOSE], ["phase3", "monitoring"]),
    ([COMPOSE, GPU], ["phase3", "gpu", "monitoring"]), ([COMPOSE, DEBIAN], ["phase2"]),
    ([COMPOSE, DEBIAN], ["phase3", "monitoring"])])
def test_docker_compose_config_accepts_every_profile(files, profiles, tmp_path):
    (tmp_path / "secrets").mkdir(exist_ok=True)
    for name in ("qdrant_api_key", "grafana_admin_password"):
        (tmp_path / "secrets" / name).write_text("k" * 32)
    settings = Settings(data_dir=tmp_path, rag={"qdrant_api_key_file": str(tmp_path / "secrets" / "qdrant_api_key")})
    args = [a for f in files for a in ("-f", str(f))] + [a for p in profiles for a in ("--profile", p)]
    proc = subprocess.run(["docker", "compose", *args, "config", "--quiet"], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", **compose_env(settings)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    if DEBIAN in files:  # the override swaps the monitoring images and leaves out what has no source here
        services_ = subprocess.run(["docker", "compose", *args, "config", "--format", "json"], capture_output=True,
                                   text=True, env={"PATH": "/usr/bin:/bin:/usr/local/bin", **compose_env(settings)},
                                   timeout=60)
        doc = json.loads(services_.stdout)["services"]
        assert not {"qdrant", "grafana", "loki", "promtail"} & set(doc)
        assert "qdrant" not in doc["rag"]["depends_on"] and "gateway" in doc["rag"]["depends_on"]
        if "prometheus" in doc:
            assert doc["prometheus"]["image"] == "suite-workbench/prometheus:debian"


SPEC = project_root() / "tests" / "data" / "compose-spec.json"  # compose-spec/compose-spec schema/, Apache-2.0


@pytest.mark.parametrize("path", [COMPOSE, GPU, DEBIAN])
def test_compose_files_match_the_compose_specification_schema(path):
    """What `docker compose config` validates first, without Docker: the Compose Specification's own JSON
    schema (vendored from compose-spec/compose-spec at 170098b, 2026-06-23). A misspelt key, a wrong
    type or a field compose does not know fails here."""
    validator = jsonschema.Draft7Validator(json.loads(SPEC.read_text()))
    doc = load(path)
    assert [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)] == []
    broken = json.loads(json.dumps(doc))
    first = next(iter(broken["services"].values()))
    first["healtcheck"] = first.pop("healthcheck", {"test": ["CMD", "true"]})  # the schema does catch a typo
    assert any("healtcheck" in e.message for e in validator.iter_errors(broken))


def test_compose_structure(tmp_path):
    doc = load(COMPOSE)
    assert {k for k in doc if not k.startswith("x-")} <= TOP_LEVEL
    svc = doc["services"]
    for name, s in svc.items():
        assert set(s) <= SERVICE_KEYS, (name, set(s) - SERVICE_KEYS)
        assert "image" in s or "build" in s, name
        assert s["network_mode"] == "host" and "ports" not in s, f"{name}: loopback through the host network only"
        for dep, cond in (s.get("depends_on") or {}).items():
            assert dep in svc and cond["condition"] in CONDITIONS, (name, dep)
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in svc[dep], f"{name} waits for {dep} to be healthy, which has no healthcheck"
        if "healthcheck" in s:
            hc = s["healthcheck"]
            assert hc["test"][0] in ("CMD", "CMD-SHELL") and hc["start_period"].endswith("s"), name
    # the suite's services: profiles per phase, a readiness healthcheck, the table's dependencies
    for spec in services.SERVICES:
        s = svc[spec.name]
        assert s["profiles"] == [f"phase{p}" for p in range(spec.phase, 4)], spec.name
        assert s["healthcheck"]["test"][1:] == ["python", "-m", "suite.healthcheck", spec.name]
        assert set(spec.depends_on) <= set(s.get("depends_on") or {}), spec.name
        assert all(c == {"condition": "service_healthy"} for c in (s.get("depends_on") or {}).values())
        assert s["read_only"] and s["user"].startswith("${SUITE_UID")
        assert s["cap_drop"] == ["ALL"] and s["security_opt"] == ["no-new-privileges:true"], spec.name
        assert "/var/run/docker.sock" not in str(s.get("volumes"))
    assert int(svc["inference-chat"]["healthcheck"]["start_period"][:-1]) >= 300  # models load slowly
    # Qdrant: the official image, loopback, an API key from the settings; RAG waits for it
    q = svc["qdrant"]
    assert q["image"].startswith("qdrant/qdrant:") and q["profiles"] == ["phase2", "phase3"]
    assert q["environment"]["QDRANT__SERVICE__HOST"] == "127.0.0.1"
    assert q["environment"]["QDRANT__SERVICE__API_KEY"].startswith("${SUITE_QDRANT_API_KEY:?")
    assert svc["rag"]["depends_on"]["qdrant"] == {"condition": "service_healthy"}
    # monitoring and gpu profiles; GPUs reserved only by the gpu profile's exporter here
    assert {n for n, s in svc.items() if s.get("profiles") == ["monitoring"]} == MONITORING
    assert [n for n, s in svc.items() if "deploy" in s] == ["gpu-exporter"] == \
        [n for n, s in svc.items() if s.get("profiles") == ["gpu"]]
    assert "--web.listen-address=127.0.0.1:${SUITE_PROMETHEUS_PORT:-9090}" in svc["prometheus"]["command"]
    assert svc["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert svc["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/run/secrets/")
    for name in ("loki.yml", "promtail.yml"):
        assert load(DEPLOY / "monitoring" / name)["server"]["http_listen_address"] == "127.0.0.1"
    # every file it mounts from the repo exists
    for s in svc.values():
        for volume in s.get("volumes", []):
            source = volume.split(":")[0].replace("${SUITE_MONITORING_DIR:-./monitoring}", "./monitoring")
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source
    # every variable it reads is set by the docker backend, or is a documented build choice
    used = set(re.findall(r"\$\{(SUITE_[A-Z_]+)", COMPOSE.read_text() + GPU.read_text()))
    key = tmp_path / "qdrant_api_key"
    key.write_text("k" * 32)
    assert used - set(compose_env(Settings(rag={"qdrant_api_key_file": str(key)}))) <= BY_HAND, used


def test_gpu_override_reserves_gpus_and_builds_inference_on_cuda():
    gpu = load(GPU)["services"]
    assert set(gpu) == {"inference-chat", "inference-code", "embedding"}
    for name, s in gpu.items():
        devices = s["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}], name
        assert "profiles" not in s  # the base file's profiles stay
    for name in ("inference-chat", "inference-code"):
        args = gpu[name]["build"]["args"]
        assert args["LLAMA_BUILD"] == "cuda" and "nvidia/cuda:" in args["BUILD_BASE"]
        assert "-devel-" in args["BUILD_BASE"] and "-runtime-" in args["RUNTIME_BASE"]
    # on the CPU the inference image takes the same argument from compose.yaml
    assert "BUILD_BASE" in load(COMPOSE)["services"]["inference-chat"]["build"]["args"]


def test_image_has_runtime_dependencies_only_and_keeps_data_out():
    ignored = {line.strip() for line in (project_root() / ".dockerignore").read_text().splitlines()}
    assert {"data/", "runs/", ".venv/"} <= ignored
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    stages = {name: base for base, name in re.findall(r"^FROM (\S+) AS (\w+)$", dockerfile, re.M)}
    assert stages == {"deps": "${RUNTIME_BASE}", "wheelhouse": "${DEPS_IMAGE}", "build": "${BUILD_BASE}",
                      "runtime": "${RUNTIME_BASE}"}
    assert dockerfile.rstrip().split("FROM ")[-1].startswith("${RUNTIME_BASE} AS runtime")  # compose's default
    assert "COPY --from=build /opt/venv /opt/venv" in dockerfile
    assert "SUITE_EXTRAS= " in dockerfile and "SUITE_SKIP_MODELS=1" in dockerfile  # no test extras, no models
    runtime = dockerfile.split("AS runtime", 1)[1]
    deps = dockerfile.split("AS deps", 1)[1].split("FROM ")[0]
    wheelhouse = dockerfile.split("AS wheelhouse", 1)[1].split("FROM ")[0]
    for stage in (runtime, deps, wheelhouse):
        assert "cmake" not in stage and "g++" not in stage
    for stage in (runtime, wheelhouse):
        assert "USER 10001:10001" in stage
    # the no-registry path: pinned wheels from the host's loopback, never copied into a layer; the
    # project's own layer installs nothing from anywhere
    assert "--no-index --no-deps --ignore-requires-python --find-links \"$WHEELHOUSE_URL\"" in deps
    assert "image-requirements.txt" in deps and ".wheelhouse" not in dockerfile
    assert "--no-index --no-deps --no-build-isolation /src" in wheelhouse


def test_debian_override_names_the_local_images_and_what_it_leaves_out():
    from suite.containers import images

    doc = load(DEBIAN)["services"]
    assert doc["prometheus"]["image"] == images.PROMETHEUS and doc["alertmanager"]["image"] == images.ALERTMANAGER
    left_out = {n for n, s in doc.items() if s.get("profiles") == ["no-source-here"]}
    assert left_out == set(images.NO_SOURCE)
    assert set(doc["rag"]["depends_on"]) == {"embedding", "gateway"}
    base = load(COMPOSE)["services"]
    from suite.supervisor.docker import QDRANT_IMAGE

    assert base["qdrant"]["image"] == QDRANT_IMAGE  # the backend looks for exactly this one


def _ready_app(ok: bool, settings):
    app = FastAPI()

    async def ready():
        if not ok:
            raise RuntimeError("model not loaded yet")
        return {}

    instrument(app, "gateway", ready=ready, settings=settings)
    return app


@pytest.mark.parametrize("ok", [True, False])
def test_container_healthcheck_follows_readiness(settings, tmp_path, ok):
    path = settings.dump_file(tmp_path / "settings.json")
    cmd = [sys.executable, "-m", "suite.healthcheck", "gateway", "--settings-file", str(path), "--timeout", "10"]
    with ServerThread(_ready_app(ok, settings), port=settings.port("gateway")):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        live = subprocess.run([*cmd, "--live"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == (0 if ok else 1), proc.stderr
    assert ok or ("gateway not ready" in proc.stderr and "HTTP 503" in proc.stderr)
    assert live.returncode == 0  # alive even while not ready
    gone = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "refused" in gone.stderr.lower()
    assert json.loads(path.read_text())["port_offset"] == settings.port_offset

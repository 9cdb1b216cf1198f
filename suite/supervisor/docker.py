"""Docker backend: the same contract over Docker Compose (GPU boxes, and any box with an engine).

``deploy/compose.yaml`` runs each service from one image as ``python -m suite.serve NAME`` with the
host network (services still bind 127.0.0.1), the data dir mounted at its own path and the
containers' settings file (``<data_dir>/pids/containers.json``) in it, so a containerised stack
behaves like the process backend's. Readiness is polled over HTTP exactly as for processes.

Compose (the CLI plugin) does what only Compose does: ``up`` with the phase's profile, ``stop``,
``rm``. Everything the engine answers — container state, health, restart count, last exit, pid,
logs — is read through the ``docker`` SDK.

``up`` prepares the data dir first: the Qdrant API key and Grafana password as 0600 files
(``ensure_secrets``), the MiniLM model copied into ``<data_dir>/models`` (the image holds no model), the
containers' settings, and — when the host user is root — the data dir handed to the containers' user
(``docker.container_uid``), since they never run as root. Where no registry is reachable
(``docker.images``), ``compose.debian.yaml`` is added and the services without an image here are named
with the reason.

Restarts come from compose's ``restart: on-failure:N`` (the engine restarts a container that exits
non-zero, with its own growing delay, at most N times). Compose does not restart a container that is
alive but hung; the liveness watch (``suite.supervisor.docker_watch``, started by ``up`` beside the
containers, stopped by ``down``) probes ``/health`` as supervisord's watch does and kills a hung
service's process, which the restart policy then brings back; ``status`` shows why.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from suite import services, tls
from suite.settings import Settings, project_root
from suite.supervisor.base import (
    Progress,
    ServiceFailed,
    ServiceState,
    SupervisorError,
    probe,
    selected,
    wait_ready,
)

PROJECT = "suite"
SERVICE_LABEL = "com.docker.compose.service"
PROJECT_LABEL = "com.docker.compose.project"
QDRANT_IMAGE = "qdrant/qdrant:v1.12.4"  # what compose.yaml names (tests/test_compose.py holds them equal)


class DockerBackend:
    def __init__(self, settings: Settings, compose_file: Path | None = None) -> None:
        self.settings = settings
        self.compose_file = compose_file or project_root() / "deploy" / "compose.yaml"
        self._client = None

    # -- the engine and compose -------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from suite.containers.engine import EngineError, require_client

            try:
                self._client = require_client()
            except EngineError as exc:
                raise SupervisorError(str(exc)) from None
        return self._client

    def local_images(self) -> bool:
        """Whether compose.debian.yaml applies (``docker.images``; auto: no Qdrant image in the engine)."""
        mode = self.settings.docker.images
        if mode != "auto":
            return mode == "debian"
        from suite.containers.images import present

        try:
            return not present(self.client, QDRANT_IMAGE)
        except SupervisorError:
            return True

    def compose_files(self) -> list[Path]:
        """compose.yaml, plus compose.gpu.yaml (GPU reservations, CUDA image) on the gpu profile, plus
        compose.debian.yaml where the images come from Debian's packages."""
        files = [self.compose_file]
        gpu = self.compose_file.with_name("compose.gpu.yaml")
        if self.settings.profile == "gpu" and gpu.is_file():
            files.append(gpu)
        debian = self.compose_file.with_name("compose.debian.yaml")
        if debian.is_file() and self.local_images():
            files.append(debian)
        return files

    def _compose(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        docker = shutil.which("docker")
        if docker is None:
            raise SupervisorError("the docker backend needs the `docker` client with Compose v2 on PATH "
                                  "(`suite engine start` installs both where it may)")
        files = [a for f in self.compose_files() for a in ("-f", str(f))]
        cmd = [docker, "compose", *files, "-p", PROJECT, *args]
        ensure_secrets(self.settings)  # compose.yaml requires the Qdrant key for any command, `stop` too
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **compose_env(self.settings)})
        if check and proc.returncode != 0:
            raise SupervisorError(f"`docker compose {' '.join(args)}` failed ({proc.returncode}): "
                                  f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        return proc

    def containers(self) -> dict[str, object]:
        """The project's containers by compose service (running, restarting and exited ones)."""
        found: dict[str, object] = {}
        for c in self.client.containers.list(all=True, filters={"label": f"{PROJECT_LABEL}={PROJECT}"}):
            name = c.labels.get(SERVICE_LABEL)
            if name and (name not in found or c.attrs["Created"] > found[name].attrs["Created"]):
                found[name] = c
        return found

    def container(self, name: str):
        return self.containers().get(name)

    def running(self) -> set[str]:
        return {name for name, c in self.containers().items() if c.status == "running"}

    # -- the data dir the containers see ----------------------------------------------------------------
    def prepare(self, say: Progress) -> None:
        """Secrets, models, the containers' settings, ownership: what the containers need before they start."""
        ensure_secrets(self.settings)
        from suite.models import install_minilm

        minilm = install_minilm(self.settings.models_dir)
        self.settings.dump_file(self.settings.pid_dir / "settings.json")
        inside = self.settings.model_copy(deep=True)
        if inside.embedding.model_path is None:  # the image holds no model: the data dir's copy
            inside.embedding.model_path = minilm
        for role in ("chat", "code"):  # the containers see the data dir only: GGUFs from elsewhere go in it
            cfg = getattr(inside.inference, role)
            if cfg.path is not None:
                cfg.path = into_data_dir(cfg.path.expanduser(), self.settings.models_dir, say)
        inside.dump_file(self.settings.pid_dir / "containers.json")
        uid, gid = container_user(self.settings)
        if os.geteuid() == 0 and uid != 0:
            changed = hand_over(self.settings.data_dir, uid, gid)
            if changed:
                say(f"  data dir handed to the containers' user {uid}:{gid} ({changed} paths)")
        blocked = untraversable(self.settings.data_dir, uid)
        if blocked:
            raise SupervisorError(f"the containers' user {uid} cannot reach the data dir: {blocked} is not "
                                  f"searchable by others (chmod o+x {blocked}, or choose another data_dir)")

    def skipped(self) -> dict[str, str]:
        """Services of compose.yaml the phase would bring that have no image source here, and why."""
        if not self.local_images():
            return {}
        from suite.containers.images import NO_SOURCE

        return {"qdrant": NO_SOURCE["qdrant"]} if self.settings.rag.qdrant_url is None else {}

    # -- contract -------------------------------------------------------------------------------
    def up(self, phase: int, progress: Progress | None = None, only: list[str] | None = None) -> list[str]:
        say = progress or (lambda _m: None)
        local, remote = selected(self.settings, phase, only)
        specs = [s for s in services.for_phase(phase) if s in local or s in remote]
        if phase >= 2 and self.local_images() and self.settings.rag.qdrant_url:
            raise SupervisorError("rag.qdrant_url is set but no Qdrant server image can be had here "
                                  "(no registry); unset it for the embedded Qdrant Edge store")
        self._ensure_images(say)
        before = self.running()
        self.prepare(say)
        for name, why in self.skipped().items():
            say(f"  - {name} skipped: {why}")
        todo = [s.name for s in local if s.name not in before]
        if todo:
            profiles = ["--profile", f"phase{phase}"] + (["--profile", "gpu"] if self.settings.profile == "gpu" else [])
            say(f"  docker compose {' '.join(profiles)} up -d {' '.join(todo)}")
            # compose itself gates the start order on `depends_on: service_healthy`
            self._compose(*profiles, "up", "-d", "--no-build", *todo, timeout=self.settings.ready_deadline_s + 60)
        deadline = time.monotonic() + self.settings.ready_deadline_s
        try:
            for spec in specs:
                here = spec in local
                took = wait_ready(spec, self.settings.url(spec.name), deadline,
                                  exited=lambda n=spec.name, h=here: self._exited(n) if h else None, progress=say,
                                  log_tail=lambda n=spec.name, h=here: self._logs(n, 25) if h else "",
                                  verify=tls.client_context(self.settings))
                say(f"  ✓ {spec.name} ready in {took:.1f}s "
                    f"({self._describe(spec.name) if here else 'at ' + self.settings.url(spec.name)})")
        except (ServiceFailed, KeyboardInterrupt):
            if todo:
                self.down(todo)
            raise
        if self.settings.docker.watch:
            start_watch(self.settings, say)
        return todo

    def _ensure_images(self, say: Progress) -> None:
        from suite.containers.images import IMAGE, present

        if not present(self.client, IMAGE):
            raise SupervisorError(f"no {IMAGE} image in the engine: build it with `suite image build` "
                                  "(or `docker compose -f deploy/compose.yaml build` with a registry)")

    def _exited(self, name: str) -> str | None:
        """None while the container runs (or is being restarted by its policy), else how it ended."""
        c = self.container(name)
        if c is None:
            return "no container"
        state = c.attrs["State"]
        if c.status in ("running", "created") or state.get("Restarting"):
            return None
        return f"container {c.status}, {_describe_exit(int(state.get('ExitCode') or 0))}"

    def _describe(self, name: str) -> str:
        c = self.container(name)
        if c is None:
            return "no container"
        return f"container {c.name}, pid {c.attrs['State'].get('Pid')}, health {_health(c) or 'none'}"

    def down(self, names: list[str] | None = None) -> list[str]:
        present_ = self.containers()
        targets = [s.name for s in reversed(services.SERVICES) if s.name in present_ and (names is None or s.name in names)]
        if targets:
            self._compose("stop", *targets)
            self._compose("rm", "-f", *targets)
        if not any(n in services.BY_NAME for n in self.containers()):
            stop_watch(self.settings)
        return [t for t in targets if present_[t].status in ("running", "restarting")]  # exited: removed only

    def status(self) -> list[ServiceState]:
        found = self.containers()
        causes = read_causes(self.settings)
        states = []
        for spec in services.SERVICES:
            st = ServiceState(spec.name, spec.phase, self.settings.url(spec.name))
            c = found.get(spec.name)
            if c is not None:
                state = c.attrs["State"]
                st.configured, st.state = True, "restarting" if state.get("Restarting") else c.status
                st.running = st.state == "running"
                st.pid = int(state.get("Pid") or 0) or None  # the container's init, host pid space
                st.restarts = int(c.attrs.get("RestartCount", 0))
                code = int(state.get("ExitCode") or 0)
                finished = state.get("FinishedAt", "")
                if st.restarts and st.running:  # a (re)start resets ExitCode: the engine's `die` event keeps it
                    code = self._last_exit_code(c, code)
                if (code and not st.running) or st.restarts:
                    st.last_exit = _describe_exit(code)
                    cause = causes.get(c.id)
                    if cause and cause["finished_after"] <= finished[:19]:
                        st.last_exit += f"; {cause['cause']}"
                    st.last_exit_at = finished
            if st.running:
                verify = tls.client_context(self.settings)
                st.healthy, health = probe(st.url + spec.health_path, verify=verify)
                st.ready, st.detail = probe(st.url + spec.ready_path, timeout=15.0, verify=verify)
                if not st.healthy:
                    st.detail = f"health: {health}"
            else:
                st.detail = f"container {st.state}" if c is not None else "not running"
            states.append(st)
        return states

    def _last_exit_code(self, container, default: int) -> int:
        """The container's latest exit code as the watch recorded it from the engine's ``die`` events
        (a restart resets ``ExitCode``; the engine keeps too few events to ask it later)."""
        import json

        path = _watch_paths(self.settings)[2].with_name("docker-exits.jsonl")
        code = None
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return default
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("container") == container.id and str(rec.get("exit_code", "")).lstrip("-").isdigit():
                code = int(rec["exit_code"])
        return default if code is None else code

    def _logs(self, name: str, lines: int = 200) -> str:
        c = self.container(name)
        if c is None:
            return ""
        return c.logs(tail=lines, timestamps=False).decode("utf-8", errors="replace")

    def log_path(self, name: str) -> Path:
        """The engine keeps the logs; this writes the latest ones to the usual file and returns it."""
        services.get(name)
        path = self.settings.log_dir / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self._logs(name, 2000))
        return path

    def kill(self, name: str) -> int:
        """SIGKILL the service's process in its container, as a crash or the OOM killer would (``docker
        kill`` counts as a manual stop, which the restart policy leaves down); its host pid."""
        c = self.container(name)
        pid = c.attrs["State"].get("Pid") if c is not None and c.status == "running" else 0
        if not pid:
            raise SupervisorError(f"{name}: no running container to kill")
        os.kill(pid, signal.SIGKILL)
        return pid


def _health(container) -> str:
    return (container.attrs["State"].get("Health") or {}).get("Status", "")


def container_user(settings: Settings) -> tuple[int, int]:
    """The containers' uid:gid: the host user's, or ``docker.container_uid`` when that is root."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    return settings.docker.container_uid, settings.docker.container_uid


def into_data_dir(path: Path, models_dir: Path, say: Progress) -> Path:
    """``path`` when it is inside the data dir (mounted into the containers); else a hard link to it in
    ``models_dir`` (a copy across file systems), which the containers' settings name instead."""
    path = path.resolve()
    if path.is_relative_to(models_dir.parent.resolve()):
        return path
    target = models_dir / path.name
    if target.exists() and target.stat().st_size == path.stat().st_size:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        say(f"  copying {path} into {models_dir} (the containers see the data dir only; a GGUF kept there "
            "needs no copy)")
        shutil.copyfile(path, tmp)
    os.replace(tmp, target)
    return target


def hand_over(data_dir: Path, uid: int, gid: int) -> int:
    """``chown -R uid:gid data_dir`` where needed (root only); the count of paths changed. The host's
    root keeps its access; the containers' user becomes the owner of every file it reads or writes."""
    changed = 0
    for root, dirs, files in os.walk(data_dir):
        for path in [root, *(os.path.join(root, n) for n in dirs + files)]:
            try:
                st = os.lstat(path)
                if (st.st_uid, st.st_gid) != (uid, gid):
                    os.lchown(path, uid, gid)
                    changed += 1
            except FileNotFoundError:
                continue
    return changed


def untraversable(data_dir: Path, uid: int) -> Path | None:
    """The first folder above ``data_dir`` that ``uid`` (not its owner) cannot search, or None."""
    for parent in reversed(Path(data_dir).parents):
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            return parent
    return None


# -- the liveness watch beside the containers -------------------------------------------------------------
def _watch_paths(settings: Settings) -> tuple[Path, Path, Path]:
    """(pid file, log, causes journal) of the docker backend's liveness watch."""
    return (settings.pid_dir / "docker-watch.pid", settings.log_dir / "docker-watch.log",
            settings.supervisor_dir / "docker-kills.jsonl")


def _watch_pid(settings: Settings) -> int | None:
    pid_file = _watch_paths(settings)[0]
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, OSError):
        return None
    return pid if b"suite.supervisor.docker_watch" in cmdline else None


def start_watch(settings: Settings, say: Progress) -> int:
    pid = _watch_pid(settings)
    if pid:
        return pid
    pid_file, log, _ = _watch_paths(settings)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "suite.supervisor.docker_watch", "--settings-file",
                                 str(settings.pid_dir / "settings.json")], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file.write_text(str(proc.pid))
    say(f"  liveness watch started (pid {proc.pid}, log {log})")
    return proc.pid


def stop_watch(settings: Settings) -> None:
    pid = _watch_pid(settings)
    if pid:
        os.kill(pid, signal.SIGTERM)
    _watch_paths(settings)[0].unlink(missing_ok=True)


def read_causes(settings: Settings) -> dict[str, dict]:
    """Why the watch killed a container, by container id (the latest kill of each)."""
    import json

    out: dict[str, dict] = {}
    try:
        lines = _watch_paths(settings)[2].read_text().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
            out[rec["container"]] = rec
        except (ValueError, KeyError):
            continue
    return out


# -- secrets and the variables compose reads -----------------------------------------------------------------
def ensure_secrets(settings: Settings) -> None:
    """The Qdrant API key and Grafana's admin password as 0600 files in ``<data_dir>/secrets`` (compose
    mounts them as secrets). The key is the file ``rag.qdrant_api_key_file`` names; with none set, a
    random key is made once in ``<data_dir>/secrets/qdrant_api_key`` and that file goes into the
    settings the containers read (the key itself never sits in a settings dump)."""
    if settings.rag.qdrant_api_key_file is None:
        _secret(settings, "qdrant_api_key")
        settings.rag.qdrant_api_key_file = settings.data_dir / "secrets" / "qdrant_api_key"
    _secret(settings, "grafana_admin_password")


def _secret(settings: Settings, name: str, value: str | None = None) -> str:
    """The secret ``name`` (made once when absent); written as ``value`` when one is given."""
    path = settings.data_dir / "secrets" / name
    if value is None and path.is_file():
        return path.read_text().strip()
    value = value or secrets.token_urlsafe(32)
    if path.is_file() and path.read_text().strip() == value:
        return value
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
        fh.write(value)
    os.replace(tmp, path)
    return value


def compose_env(settings: Settings) -> dict[str, str]:
    """What compose.yaml interpolates, from the settings: data dir, the containers' user, ports, the key."""
    uid, gid = container_user(settings)
    env = {"SUITE_DATA_DIR": str(settings.data_dir), "SUITE_PROFILE": settings.profile,
           "SUITE_UID": str(uid), "SUITE_GID": str(gid),
           "SUITE_QDRANT_GRPC_PORT": str(settings.port("qdrant") + 1)}
    for name in ("qdrant", "prometheus", "alertmanager", "loki", "grafana", "gpu_exporter"):
        env[f"SUITE_{name.upper()}_PORT"] = str(settings.port(name))
    key = settings.qdrant_api_key() if settings.rag.qdrant_api_key_file else None
    if key:
        env["SUITE_QDRANT_API_KEY"] = key
    return env


def _describe_exit(code: int) -> str:
    """Docker reports a signal death as 128 + the signal number."""
    if code > 128:
        try:
            return f"exit status {code} (signal {code - 128}, {signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"exit status {code}"

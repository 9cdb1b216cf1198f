"""Running the suite beside a user's stack: what tests, benchmarks and notebooks share.

- ``stack_settings`` — settings whose every port is free (``free_port_offset``), in a data dir of
  the caller's, optionally serving one GGUF as both models;
- ``running_stack`` — a real stack of phases 1..N through the process backend, torn down after;
- ``serve`` — the named services' apps in this process (uvicorn threads) on their ports;
- ``ServerThread`` — one ASGI app under uvicorn in a daemon thread;
- ``start_app_process`` — a small app from source text in a child uvicorn process;
- ``service_process`` / ``serve_processes`` — services in child processes started exactly as
  supervisord starts them (``python -m suite.serve NAME --settings-file …``), with nobody supervising;
- ``stack_env`` / ``run_cli`` — the ``SUITE_*`` environment that makes a child (a kernel, the
  ``suite`` CLI) see the same stack;
- ``git`` / ``git_repo`` — repositories to point git tools at (``suite.gitrepos``, re-exported);
- ``stack_keys`` / ``auth`` — API keys of each role for a stack (minted once per key store with a
  short expiry, revoked when the process exits) and the ``Authorization`` header that carries one;
- ``small_filesystem`` / ``fill`` — a size-limited tmpfs mounted at a folder (a full disk, for real)
  and a file that takes all but a given number of its free bytes.

Nothing here imports pytest: benchmarks and notebooks use it as a library.
"""

from __future__ import annotations

import atexit
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

from suite import services
from suite.gitrepos import git, git_repo
from suite.net import free_port, port_free
from suite.settings import Settings


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (``ip_local_port_range``)."""
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port_offset() -> int:
    """An offset that puts every suite port on a free port (never touching a user's stack), outside the
    ephemeral range: a port free when checked there can be taken by any outgoing connection before a
    service that loads a model for seconds binds it (seen: embedding's port lost to one in CI)."""
    base = list(Settings().ports.model_dump().values())
    low, high = ephemeral_ports()
    below = range(10000, low - max(base), 7)  # every port under the range
    above = range(high + 1 - min(base), 65536 - max(base), 7)  # or every port over it
    choices = below if len(below) >= 100 else above if len(above) >= 100 else range(20000, 50000, 7)
    for _ in range(200):
        offset = random.choice(choices)
        if all(port_free("127.0.0.1", p + offset) for p in base):
            return offset
    raise RuntimeError("no free port range found")


def stack_settings(data_dir: Path, model: Path | None = None, **overrides) -> Settings:
    """Settings on free ports in ``data_dir``; with ``model``, that GGUF serves chat and code
    (context 1024) and ``suite up`` waits up to 240 s for readiness."""
    if model is not None:
        inference = overrides.pop("inference", {})
        for role in ("chat", "code"):
            inference.setdefault(role, {"alias": role, "path": str(model), "n_ctx": 1024})
        overrides = {"inference": inference, "ready_deadline_s": 240, **overrides}
    return Settings(data_dir=data_dir, port_offset=free_port_offset(), **overrides)


def bring_up(settings: Settings, phase: int):
    """Start phases 1..``phase`` with the process backend (returns once every service is ready)."""
    from suite.supervisor.process import ProcessBackend

    backend = ProcessBackend(settings)
    backend.up(phase)
    return backend


@contextmanager
def running_stack(settings: Settings, phase: int) -> Iterator[Settings]:
    """A real stack of phases 1..``phase`` for the block; everything it started is stopped after."""
    backend = bring_up(settings, phase)
    try:
        yield settings
    finally:
        backend.down()


class ServerThread:
    """One uvicorn server in a daemon thread; ``start`` waits until it accepts connections."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None,
                 deadline_s: float = 30.0, **ssl_options: str) -> None:
        port = port or free_port(host)
        self.deadline_s = deadline_s
        self.scheme = "https" if ssl_options else "http"
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                    lifespan="on", timeout_graceful_shutdown=3, **ssl_options))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, deadline_s: float | None = None) -> None:
        self.thread.start()
        deadline = time.monotonic() + (deadline_s or self.deadline_s)
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.server.config.host}:{self.server.config.port}"

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def serve(settings: Settings, *names: str) -> Iterator[Settings]:
    """Run the named services (e.g. ``memory``, ``tools``) in this process, each on its port (TLS
    with its certificate when ``tls.enabled``)."""
    from suite import tls

    running = []
    try:
        for name in names:
            spec = services.get(name)
            app = spec.load_factory()(settings, **spec.kwargs)
            server = ServerThread(app, settings.host, settings.port(name), **tls.uvicorn_options(settings, name))
            server.start()
            running.append(server)
        yield settings
    finally:
        for server in reversed(running):
            server.stop()


def service_process(settings: Settings, name: str) -> subprocess.Popen:
    """``name`` in a child process, started as supervisord starts it (same command line, its log in
    ``<data_dir>/logs``, a session of its own), but supervised by nobody."""
    file = settings.dump_file(settings.pid_dir / "settings.json")
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.log_dir / f"{name}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "suite.serve", name, "--settings-file", str(file)],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})


def wait_until_ready(settings: Settings, name: str, within_s: float = 240.0,
               proc: subprocess.Popen | None = None) -> None:
    """Poll ``name``'s readiness probe until it passes (``RuntimeError`` after ``within_s`` or when
    ``proc`` exits first)."""
    url = settings.url(name) + services.get(name).ready_path
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}) before it was ready; see its log")
        try:
            if httpx.get(url, timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{name} was not ready within {within_s:.0f}s")


@contextmanager
def serve_processes(settings: Settings, *names: str) -> Iterator[dict[str, subprocess.Popen]]:
    """The named services as child processes (``service_process``), in order, each ready before the
    next starts; stopped (SIGTERM, then SIGKILL) after."""
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name in names:
            procs[name] = service_process(settings, name)
            wait_until_ready(settings, name, proc=procs[name])
        yield procs
    finally:
        for proc in reversed(list(procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_app_process(folder: Path, module: str, source: str, env: dict[str, str] | None = None,
                      deadline_s: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Write ``source`` as ``folder/module.py``, serve its ``app`` with uvicorn on a free loopback
    port in a child process, and return it once ``/health`` answers 200."""
    (folder / f"{module}.py").write_text(source)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", f"{module}:app", "--host", "127.0.0.1",
                             "--port", str(port), "--log-level", "warning", "--no-access-log"],
                            cwd=folder, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{module} app did not start on {url}")


def stack_env(settings: Settings) -> dict[str, str]:
    """``SUITE_*`` variables under which ``Settings()`` in a child process finds this stack."""
    env = {"SUITE_PORT_OFFSET": str(settings.port_offset), "SUITE_DATA_DIR": str(settings.data_dir),
           "SUITE_READY_DEADLINE_S": str(settings.ready_deadline_s)}
    for role in ("chat", "code"):
        cfg = getattr(settings.inference, role)
        if cfg.path is not None:
            env[f"SUITE_INFERENCE__{role.upper()}__PATH"] = str(cfg.path)
        env[f"SUITE_INFERENCE__{role.upper()}__N_CTX"] = str(cfg.n_ctx)
    return env


def run_cli(settings: Settings, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``suite ARGV`` in a subprocess against this stack (its data dir and ports)."""
    return subprocess.run([sys.executable, "-m", "suite.cli", *argv], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **stack_env(settings)})


_MINTED: dict[Path, dict[str, str]] = {}


def stack_keys(settings: Settings) -> dict[str, str]:
    """One key per role (admin, developer, guest) in the stack's key store, minted on first use with
    ``auth.run_key_ttl_s`` expiry and this process as their run; revoked when the process exits."""
    path = settings.key_store_path
    if path not in _MINTED:
        from suite.auth.keys import KeyStore
        from suite.auth.roles import ROLES

        store = KeyStore.open(path)
        try:
            _MINTED[path] = {role: store.create(role, f"test {role}", settings.auth.run_key_ttl_s,
                                                _RUN_ID)[1] for role in ROLES}
        finally:
            store.close()
        if len(_MINTED) == 1:
            atexit.register(_revoke_minted)
    return _MINTED[path]


def auth(settings: Settings, role: str = "admin") -> dict[str, str]:
    """``{"Authorization": "Bearer KEY"}`` with the stack's key of ``role`` (see ``stack_keys``)."""
    return {"Authorization": f"Bearer {stack_keys(settings)[role]}"}


_RUN_ID = f"tests-{os.getpid()}"


def _revoke_minted() -> None:
    from suite.auth.keys import KeyStore

    for path in _MINTED:
        if path.exists():
            store = KeyStore.open(path)
            try:
                store.revoke_run(_RUN_ID)
            finally:
                store.close()


__all__ = ["ServerThread", "auth", "bring_up", "free_port_offset", "git", "git_repo", "run_cli", "running_stack",
           "serve", "stack_env", "stack_keys", "stack_settings", "start_app_process"]


class MountRefused(RuntimeError):
    """This process may not mount a file system here (not root, or a sandbox without mount rights)."""


@contextmanager
def small_filesystem(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``path`` (created), unmounted after (lazily, if a process
    still holds a file there). Needs root: ``MountRefused`` says why otherwise."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        raise MountRefused("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size_bytes)},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise MountRefused(f"mount -t tmpfs failed: {(proc.stderr or proc.stdout).strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(folder: Path, leave_bytes: int = 0, name: str = "filler.bin") -> Path:
    """A file in ``folder`` that takes its file system's free space but ``leave_bytes``."""
    import shutil

    target = Path(folder) / name
    free = shutil.disk_usage(folder).free
    block = b"\0" * (1 << 20)
    remaining = max(0, free - leave_bytes)
    with open(target, "ab") as fh:
        while remaining > 0:
            try:
                remaining -= fh.write(block[:min(len(block), remaining)])
                fh.flush()
            except OSError:  # ENOSPC: full already
                break
    return target

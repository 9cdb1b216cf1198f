"""API keys for the harness's own requests, made with ``suite keys create`` as an operator would.

No admin bootstrap endpoint exists, on purpose: creating a key needs the stack's data dir, not the
network. The CLI runs in a subprocess through ``harness.stack`` with the caller's settings.

Keys minted by a run are the run's: ``harness run`` mints one key per role with the run's id and
a short expiry (``auth.run_key_ttl_s``) before the first runbook, hands them to every kernel in
``SUITE_RUN_KEYS`` (papermill kernels inherit the environment; nothing is written to the run
directory), and revokes them all when the run ends, pass or fail (``revoke_run``). A notebook or a
check run by hand, outside ``harness run``, mints its own set the same way on first use and revokes
it when its process exits. ``run_keys`` is the one way harness code gets a key.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from dataclasses import asdict, dataclass

from harness import stack
from suite.settings import Settings

ENV = "SUITE_RUN_KEYS"
ROLES = ("admin", "developer", "guest")


@dataclass(frozen=True)
class RunKeys:
    run_id: str
    key_store: str  # the key store they live in (a kernel checks it matches its stack)
    admin: str
    developer: str
    guest: str

    def for_role(self, role: str) -> str:
        return getattr(self, role)

    def to_env(self) -> dict[str, str]:
        return {ENV: json.dumps(asdict(self))}


def make_key(settings: Settings, role: str, name: str = "harness", ttl_s: float | None = None,
             run_id: str | None = None) -> str:
    """A new API key of ``role`` (raises ``RuntimeError`` when the CLI fails)."""
    args = ["keys", "create", "--role", role, "--name", name, "--json"]
    if ttl_s:
        args += ["--ttl", f"{max(1, int(ttl_s))}s"]
    if run_id:
        args += ["--run", run_id]
    proc = stack.run_suite(args, settings, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"suite keys create --role {role} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["key"]


def mint_run_keys(settings: Settings, run_id: str, ttl_s: float | None = None) -> RunKeys:
    """One key per role, owned by ``run_id``, expiring after ``ttl_s`` (default auth.run_key_ttl_s)."""
    ttl = ttl_s or settings.auth.run_key_ttl_s
    keys = {role: make_key(settings, role, f"run {run_id}", ttl, run_id) for role in ROLES}
    return RunKeys(run_id, str(settings.key_store_path), **keys)


def revoke_run(settings: Settings, run_id: str) -> str:
    """Revoke every key ``run_id`` minted; the CLI's message (raises ``RuntimeError`` on failure)."""
    proc = stack.run_suite(["keys", "revoke-run", run_id], settings, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"suite keys revoke-run {run_id} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return proc.stdout.strip()


_OWN: dict[str, RunKeys] = {}


def run_keys(settings: Settings) -> RunKeys:
    """The keys of the run this process belongs to: those ``harness run`` passed in ``SUITE_RUN_KEYS``
    when they are for this stack's key store, else a set minted now for this process (revoked when
    it exits)."""
    store = str(settings.key_store_path)
    given = os.environ.get(ENV)
    if given:
        keys = RunKeys(**json.loads(given))
        if keys.key_store == store:
            return keys
    if store not in _OWN:
        run_id = process_run_id()
        _OWN[store] = mint_run_keys(settings, run_id)
        atexit.register(_revoke_quietly, settings, run_id)
    return _OWN[store]


def process_run_id(pid: int | None = None, at: float | None = None) -> str:
    """``manual-<host>-<pid>-<epoch s>``: the owner of the keys a process mints by hand."""
    return f"manual-{socket.gethostname()}-{pid or os.getpid()}-{int(time.time() if at is None else at)}"


def held_by_live_process(run_id: str) -> bool:
    """True when ``run_id`` names keys a process of this host minted by hand and that process still
    runs: a kernel still open in JupyterLab, whose keys go when it exits (not a leftover)."""
    import psutil

    prefix = f"manual-{socket.gethostname()}-"
    if not run_id.startswith(prefix):
        return False
    try:
        pid, minted = (int(part) for part in run_id[len(prefix):].split("-"))
        process = psutil.Process(pid)
        return process.create_time() <= minted + 1 and process.status() != psutil.STATUS_ZOMBIE
    except (ValueError, psutil.Error):
        return False


def bearer(key: str) -> dict[str, str]:
    """The ``Authorization`` header for a key."""
    return {"Authorization": f"Bearer {key}"}


def headers_for(settings: Settings, role: str = "developer") -> dict[str, str]:
    """The ``Authorization`` header of the run's key of ``role``."""
    return bearer(run_keys(settings).for_role(role))


def _revoke_quietly(settings: Settings, run_id: str) -> None:
    try:
        revoke_run(settings, run_id)
    except Exception:  # at exit: a key left behind expires on its own (auth.run_key_ttl_s)
        pass

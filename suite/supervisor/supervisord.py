"""supervisord as the process backend's supervising parent: its config, its start and stop, a client.

``suite up`` writes ``<data_dir>/supervisor/supervisord.conf`` from the service table and the
settings (every service a ``[program:NAME]`` running ``python -m suite.serve NAME --settings-file
…``, not started automatically: ``suite up`` starts them in dependency waves), starts supervisord if
it is not running, and talks to it over XML-RPC on a unix socket in that folder (folder 0700,
socket 0600, no TCP control port). The watch (``suite.supervisor.watch``) runs under it as an event
listener. See docs/architecture.md for why supervisord and what it does and does not do.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.xmlrpc import SupervisorTransport, UnixStreamHTTPConnection

from suite import services
from suite.fsio import write_atomic
from suite.settings import Settings
from suite.supervisor.base import SupervisorError

WATCH = "suite-watch"  # the event listener's name in supervisord
ALIVE = {"STARTING", "RUNNING", "BACKOFF", "STOPPING"}  # states that hold (or will hold) a process
SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


@dataclass(frozen=True)
class Paths:
    """Where supervisord's files live for one data dir."""

    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "supervisord.conf"

    @property
    def socket(self) -> Path:
        return self.root / "supervisord.sock"

    @property
    def pidfile(self) -> Path:
        return self.root / "supervisord.pid"

    @property
    def log(self) -> Path:
        return self.root / "supervisord.log"

    @property
    def state(self) -> Path:
        """Per service: restarts, last exit, a start limit hit (written by the watch)."""
        return self.root / "state.json"

    @property
    def journal(self) -> Path:
        """Every exit, one JSON line each (appended by the watch, kept across restarts of supervisord)."""
        return self.root / "exits.jsonl"

    @property
    def stack(self) -> Path:
        """The phase ``suite up`` brought up, for ``suite status``."""
        return self.root / "stack.json"


def paths(settings: Settings) -> Paths:
    return Paths(settings.supervisor_dir)


def _value(text: str | Path) -> str:
    """A config value: supervisord's parser expands ``%(name)s``, so a literal ``%`` is doubled."""
    return str(text).replace("%", "%%")


def _command(*argv: str | Path) -> str:
    return _value(" ".join(shlex.quote(str(a)) for a in argv))


def render_config(settings: Settings, settings_file: Path, cwd: Path | None = None) -> str:
    """The whole supervisord config for this data dir: control socket, daemon, watch, one program per service."""
    p, sup = paths(settings), settings.supervision
    cwd = cwd or Path.cwd()
    ident = "suite-" + hashlib.sha256(str(settings.data_dir).encode()).hexdigest()[:12]
    lines = [
        "; written by `suite up` from the service table and the settings; edits are overwritten",
        "[unix_http_server]", f"file={_value(p.socket)}", "chmod=0600", "",
        "[supervisord]", f"logfile={_value(p.log)}", "logfile_maxbytes=5MB", "logfile_backups=2",
        f"pidfile={_value(p.pidfile)}", f"childlogdir={_value(p.root)}", f"directory={_value(cwd)}",
        "umask=077", f"identifier={ident}", "loglevel=info", "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
        "[supervisorctl]", f"serverurl=unix://{_value(p.socket)}", "",
        f"[eventlistener:{WATCH}]",
        f"command={_command(sys.executable, '-m', 'suite.supervisor.watch', '--settings-file', settings_file)}",
        f"directory={_value(cwd)}", "events=PROCESS_STATE", "buffer_size=200", "autostart=true",
        "autorestart=true", "priority=1", "stdout_logfile=NONE", "redirect_stderr=false",
        f"stderr_logfile={_value(settings.log_dir / 'supervisor-watch.log')}",
        "stderr_logfile_maxbytes=5MB", "stderr_logfile_backups=2", "",
    ]
    for index, spec in enumerate(services.SERVICES):
        lines += [
            f"[program:{spec.name}]",
            f"command={_command(sys.executable, '-m', 'suite.serve', spec.name, '--settings-file', settings_file)}",
            f"directory={_value(cwd)}",
            "autostart=false",
            # Restart=on-failure: exit 0 (a clean stop, SIGTERM included: uvicorn exits 0) stays down,
            # any other code or a signal restarts; the watch adds the start limit
            "autorestart=unexpected", "exitcodes=0",
            f"startsecs={sup.start_secs}", f"startretries={sup.start_retries}",
            "stopsignal=TERM", f"stopwaitsecs={sup.stop_wait_s}", "stopasgroup=true", "killasgroup=true",
            f"priority={10 + index}",  # table order is dependency order; shutdown runs it backwards
            "redirect_stderr=true", f"stdout_logfile={_value(settings.log_dir / (spec.name + '.log'))}",
            f"stdout_logfile_maxbytes={sup.log_max_bytes}", f"stdout_logfile_backups={sup.log_backups}",
            "",
        ]
    return "\n".join(lines)


class _UnixConnection(UnixStreamHTTPConnection):
    """supervisor's unix-socket connection, with the timeout it leaves out."""

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.timeout)


class Client:
    """XML-RPC to supervisord over its unix socket: ``client.call("getAllProcessInfo")``."""

    def __init__(self, socket_path: Path, timeout_s: float = 30.0) -> None:
        self.socket_path = Path(socket_path)
        transport = SupervisorTransport(None, None, f"unix://{socket_path}")

        def connection() -> _UnixConnection:
            conn = _UnixConnection("localhost", timeout=timeout_s)
            conn.socketfile = str(socket_path)
            return conn

        transport._get_connection = connection
        # the URL is a placeholder: the transport connects to the socket
        self._proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self._proxy.supervisor, method)(*args)

    def reachable(self) -> bool:
        try:
            return self.call("getState")["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Error):
            return False

    def infos(self) -> dict[str, dict[str, Any]]:
        """``getProcessInfo`` of every service program, by name (the watch left out)."""
        return {i["name"]: i for i in self.call("getAllProcessInfo") if i["name"] in services.BY_NAME}


def fault_code(exc: BaseException) -> str:
    """The symbolic name of an XML-RPC fault (``NOT_RUNNING``, ``ALREADY_STARTED``, …)."""
    from supervisor.xmlrpc import Faults

    code = getattr(exc, "faultCode", None)
    return next((k for k, v in vars(Faults).items() if v == code), str(code))


def connect(settings: Settings) -> Client | None:
    """A client of this data dir's running supervisord, or None when none answers."""
    sock = paths(settings).socket
    if not sock.exists():
        return None
    client = Client(sock)
    return client if client.reachable() else None


def start(settings: Settings, settings_file: Path, deadline_s: float = 20.0) -> Client:
    """Write the config and start supervisord (it daemonizes); return a client once it answers."""
    p = paths(settings)
    if len(str(p.socket)) > SOCKET_MAX:
        raise SupervisorError(f"the control socket path {p.socket} is longer than a unix socket allows "
                              f"({SOCKET_MAX} characters); use a shorter SUITE_DATA_DIR")
    if not wait_gone(settings, settings.supervision.stop_wait_s + 15):
        raise SupervisorError(f"a supervisord for {settings.data_dir} is still running (pid "
                              f"{_daemon_pid(settings)}) but does not answer on {p.socket}")
    p.root.mkdir(parents=True, exist_ok=True)
    os.chmod(p.root, 0o700)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    write_private(p.conf, render_config(settings, settings_file))
    p.state.unlink(missing_ok=True)  # a new supervisor: restart counts start again (the journal stays)
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    errors = p.root / "supervisord.start.err"
    with open(errors, "w") as err:
        proc = subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(p.conf)],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env,
                              start_new_session=True, timeout=60, umask=0o077)
    if proc.returncode != 0:
        raise SupervisorError(f"supervisord did not start (exit {proc.returncode}): "
                              f"{errors.read_text(errors='replace').strip()[-800:]}")
    client = Client(p.socket)
    deadline = time.monotonic() + deadline_s
    while not client.reachable():
        if time.monotonic() > deadline:
            raise SupervisorError(f"supervisord did not answer on {p.socket} within {deadline_s:.0f}s; "
                                  f"its log ends:\n{tail(p.log, 15)}")
        time.sleep(0.1)
    return client


def update(settings: Settings, client: Client, settings_file: Path) -> None:
    """Rewrite the config and apply it to the running supervisord (``supervisorctl update``): new
    programs are added, changed ones that are not running are replaced; running ones are kept."""
    p = paths(settings)
    text = render_config(settings, settings_file)
    if p.conf.exists() and p.conf.read_text() == text:
        return
    write_private(p.conf, text)
    [[added, changed, _removed]] = client.call("reloadConfig")
    infos = client.infos()
    for name in changed:
        if name in services.BY_NAME and infos.get(name, {}).get("statename") not in ALIVE:
            client.call("removeProcessGroup", name)
            added.append(name)
    for name in added:
        client.call("addProcessGroup", name)


def _daemon_pid(settings: Settings) -> int | None:
    """The pid of this data dir's supervisord while it lives (from its pid file)."""
    try:
        pid = int(paths(settings).pidfile.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None
    return pid


def wait_gone(settings: Settings, timeout_s: float) -> bool:
    """Wait until this data dir's supervisord has exited."""
    deadline = time.monotonic() + timeout_s
    while _daemon_pid(settings) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def shutdown(settings: Settings, client: Client, wait: bool = False) -> None:
    """Ask supervisord to exit. Without ``wait`` this returns at once: the caller has stopped the
    services already, and supervisord's own shutdown walks its process groups one loop turn
    (up to a second) each; ``start`` waits for a previous daemon still on its way out."""
    try:
        client.call("shutdown")
    except (OSError, xmlrpc.client.Error):
        pass
    paths(settings).stack.unlink(missing_ok=True)
    if wait:
        wait_gone(settings, settings.supervision.stop_wait_s + 15)


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, crash-safe (``suite.fsio``)."""
    write_atomic(path, text, mode=0o600)


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""

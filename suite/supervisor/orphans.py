"""Services a dead supervisord left running: found, shown, and cleanly replaced.

If supervisord itself is killed (SIGKILL, the OOM killer), its services keep running — re-parented,
unsupervised: nothing restarts them when they crash, and their ports block a new ``suite up``. They
cannot be adopted (supervisord only supervises processes it forked), so ``suite up`` replaces them:
each is stopped as supervisord would have stopped it (SIGTERM to its process group, SIGKILL after
``supervision.stop_wait_s``), then started again under a new supervisord. ``suite down`` stops them
too, and ``suite status`` shows them as ``orphaned``.

A process is one of this data dir's services when its command line is ours —
``python -m suite.serve NAME --settings-file <data_dir>/pids/settings.json`` — and it belongs to this
user; the watch (``suite.supervisor.watch``) of the same data dir is matched the same way (it exits
on its own once supervisord's pipe closes; a stuck one is stopped with the rest). Only looked for
when no supervisord of the data dir answers, so a live supervisor's children are never touched.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

from suite import services
from suite.settings import Settings

log = logging.getLogger(__name__)

WATCH_MODULE = "suite.supervisor.watch"


@dataclass(frozen=True)
class Orphan:
    name: str  # the service's name, or "watch"
    pid: int
    started: float  # epoch seconds


def settings_file(settings: Settings) -> str:
    """The settings file every supervised process of this data dir is started with."""
    return str(settings.pid_dir / "settings.json")


def _ours(cmdline: list[str], wanted: str) -> str | None:
    """The service (or "watch") a command line runs for the settings file ``wanted``, else None. Exactly
    the command lines ``render_config`` writes: ``PYTHON -m suite.serve NAME --settings-file FILE`` and
    ``PYTHON -m suite.supervisor.watch --settings-file FILE``."""
    if len(cmdline) not in (5, 6) or cmdline[1] != "-m" or cmdline[-2] != "--settings-file":
        return None
    if os.path.realpath(cmdline[-1]) != os.path.realpath(wanted):
        return None
    if len(cmdline) == 5 and cmdline[2] == WATCH_MODULE:
        return "watch"
    if len(cmdline) == 6 and cmdline[2] == "suite.serve" and cmdline[3] in services.BY_NAME:
        return cmdline[3]
    return None


def find(settings: Settings) -> list[Orphan]:
    """This data dir's service processes and watch, whoever their parent is (call it only when no
    supervisord of the data dir answers)."""
    wanted, uid, found = settings_file(settings), os.getuid(), []
    for proc in psutil.process_iter(["pid", "cmdline", "uids", "create_time"]):
        try:
            info = proc.info
            if proc.pid == os.getpid() or not info["cmdline"] or info["uids"] is None or info["uids"].real != uid:
                continue
            name = _ours(info["cmdline"], wanted)
        except (psutil.Error, ValueError):
            continue
        if name is not None:
            found.append(Orphan(name, proc.pid, info["create_time"]))
    return sorted(found, key=lambda o: o.pid)


def stop(settings: Settings, orphans: list[Orphan], say: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Stop them as supervisord would (SIGTERM to the process group, SIGKILL after ``stop_wait_s``);
    return the names stopped. A process that is gone already is skipped."""
    if not orphans:
        return []
    procs: dict[int, tuple[Orphan, psutil.Process]] = {}
    for orphan in orphans:
        try:
            proc = psutil.Process(orphan.pid)
            if abs(proc.create_time() - orphan.started) > 1:  # the pid was reused meanwhile
                continue
            procs[orphan.pid] = (orphan, proc)
            _signal_group(orphan.pid, signal.SIGTERM)
            say(f"  ! {orphan.name} (pid {orphan.pid}) runs without a supervisor: stopping it (SIGTERM)")
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs([p for _, p in procs.values()], timeout=settings.supervision.stop_wait_s)
    for proc in alive:
        log.warning("orphaned %s (pid %d) ignored SIGTERM for %ss: SIGKILL", procs[proc.pid][0].name, proc.pid,
                    settings.supervision.stop_wait_s)
        _signal_group(proc.pid, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=10)
    return [o.name for o, _ in procs.values()]


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group ``pid`` leads (supervisord starts every program as a group leader and
    stops it as a group), else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def describe(orphans: list[Orphan]) -> str:
    return ", ".join(f"{o.name} (pid {o.pid}, up {time.time() - o.started:.0f} s)" for o in orphans)

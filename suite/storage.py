"""A full disk: writes refused with a reason before they fail, reads untouched, health that says why.

Every stateful part keeps ``storage.reserve_bytes`` free on the file system it writes to (the data
dir's, or the backup dir's): a write that would eat into the reserve is refused with
``InsufficientStorage`` (HTTP **507**, the reason and the figures in the common error shape), and
serving resumes by itself once space is freed — the free space is read again at most every second,
no restart needed.

Why refuse early instead of letting the write fail: SQLite fails cleanly (``SQLITE_FULL``, the
transaction rolled back — mapped to 507 too, see ``is_disk_full``), but Qdrant Edge writes its WAL
and segments through ``mmap`` into pre-allocated sparse files, and a page the file system cannot back
kills the process with **SIGBUS** (reproduced on a full tmpfs: ``tests/test_full_disk.py``). So the
edge store checks the reserve plus the write's own size before every write, and a background
optimize checks room for its copy of the shard first.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class InsufficientStorage(Exception):
    """Not enough free space for a write (HTTP 507). ``message`` says how much is free and needed."""

    status = 507
    code = "insufficient_storage"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def is_disk_full(exc: BaseException) -> bool:
    """A write that failed because the file system (or a quota) is full."""
    if isinstance(exc, InsufficientStorage):
        return True
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    if isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    return "No space left on device" in str(exc) or "database or disk is full" in str(exc)


def existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the file system a folder not made yet will be on)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"


class SpaceGuard:
    """The free space of the file system holding ``path``, against a reserve; thread-safe, cached ``every_s``."""

    def __init__(self, path: Path, reserve_bytes: int, what: str = "the data dir", every_s: float = 1.0) -> None:
        self.path = Path(path)
        self.reserve = int(reserve_bytes)
        self.what = what
        self.every_s = every_s
        self._lock = threading.Lock()
        self._read: tuple[float, int, int] | None = None  # (monotonic time, free, total)

    def usage(self) -> tuple[int, int]:
        """(free bytes for this user, total bytes), read again once ``every_s`` passed."""
        with self._lock:
            now = time.monotonic()
            if self._read is None or now - self._read[0] >= self.every_s:
                du = shutil.disk_usage(existing(self.path))
                self._read = (now, du.free, du.total)
            return self._read[1], self._read[2]

    def refusal(self, need_bytes: int = 0) -> str | None:
        """Why a write of ``need_bytes`` must be refused now, or None."""
        free, total = self.usage()
        if free - need_bytes >= self.reserve:
            return None
        wanted = f"{mib(need_bytes)} for this write plus " if need_bytes else ""
        return (f"insufficient storage: {mib(free)} free of {mib(total)} on the file system of {self.what}; "
                f"writes need {wanted}a reserve of {mib(self.reserve)} (storage.reserve_bytes). Free space "
                f"there and retry; reads still work")

    def check(self, need_bytes: int = 0) -> None:
        """Raise ``InsufficientStorage`` unless ``need_bytes`` fit above the reserve."""
        reason = self.refusal(need_bytes)
        if reason is not None:
            raise InsufficientStorage(reason)

    def state(self) -> dict[str, Any]:
        """For ``/health`` (no paths: it is open): free and total bytes, the reserve, whether writes go."""
        free, total = self.usage()
        reason = self.refusal()
        return {"free_bytes": free, "total_bytes": total, "reserve_bytes": self.reserve,
                "writes": "refused" if reason else "accepted", **({"reason": reason} if reason else {})}


def tree_bytes(path: Path) -> int:
    """Bytes a folder's files really take on disk (allocated blocks: the edge store's files are sparse)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total

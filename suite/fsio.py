"""Crash-safe file writes: the one helper every file the suite and the harness write goes through.

A file is written to a temporary file beside it (same folder, so the rename cannot cross a file
system), flushed and ``fsync``ed, renamed over the target (``os.replace``: atomic on POSIX), and the
folder is ``fsync``ed so the rename itself survives a power cut. A reader therefore sees the old
file or the new one, never half of one — after ``kill -9`` of the writer, after a full disk (the
write fails, the temporary file is removed, the old file is untouched) and after a power cut.

``durable=False`` keeps the atomic rename but skips both fsyncs: for files that are rewritten often
and rebuilt when lost (none of the suite's own state is). The fsync choices are listed in
docs/architecture.md (*Durability*).

Append-only journals (``exits.jsonl``, ``progress.log``, ``samples.jsonl`` while Locust writes them) are
not rewritten: a line is appended and flushed, and every reader skips a torn last line.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

DEFAULT_MODE = 0o666  # like open(): the process umask applies


def fsync_dir(folder: str | Path) -> None:
    """Make renames and new names inside ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Flush a file written by someone else (a subprocess, a library) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | Path, data: bytes | str, *, mode: int = DEFAULT_MODE, durable: bool = True,
                 encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``data`` atomically (temp file, fsync, rename, fsync of the folder).

    ``mode`` is the new file's permission bits (``0o600`` for anything private); the umask applies,
    as with ``open``. The temporary file is created exclusively and never follows a symlink; on any
    error it is removed and the old file stays as it was.
    """
    path = Path(path)
    raw = data.encode(encoding) if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
    return path


def write_json(path: str | Path, data: Any, *, indent: int | None = 2, mode: int = DEFAULT_MODE,
               durable: bool = True, default: Any = None) -> Path:
    """``data`` as JSON (UTF-8, not ASCII-escaped), written with ``write_atomic``."""
    text = json.dumps(data, indent=indent, ensure_ascii=False, default=default)
    return write_atomic(path, text + ("\n" if indent is not None else ""), mode=mode, durable=durable)

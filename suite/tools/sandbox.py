"""The file sandbox: every path a tool touches must resolve, symlinks followed, inside a root.

Rules (each refusal is a ``ToolError`` in the common shape, never a 500):
  * the path is a non-empty string without null bytes (400 ``invalid_path``);
  * no ``..`` component, plain or percent-encoded (``%2e%2e``, double-encoded too) (403);
  * relative paths start at the first root; absolute paths must lie inside a root (403);
  * the real path (``os.path.realpath``) equals a root or starts with ``root + os.sep`` (403), so a
    symlink leading outside is refused;
  * the checked real path is then opened from its root **one component at a time**, each with
    ``O_NOFOLLOW`` relative to the directory fd held from the step before, so a directory swapped
    for a symlink between the check and the open makes the open fail (403 ``path_changed``) instead
    of leading outside; reads, writes, listings and deletes all go through these held fds;
  * reads and writes touch regular files only (400 for devices, FIFOs, sockets, directories) and at
    most ``max_file_bytes`` (413); a regular file with more than one hard link is not read (403
    ``hardlinked_file``; one of its names may lie outside) unless ``allow_hardlinks``;
  * writes go to a temp file in the same (held) folder, then ``rename`` inside it;
  * ``delete_file`` removes the name itself: a symlink is unlinked, never its target.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

from suite.settings import Settings
from suite.tools.errors import ToolError

MAX_PATH_CHARS = 4096
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Sandbox:
    """Resolves and checks paths against the configured roots; reads and writes safely."""

    def __init__(self, roots: list[Path], max_file_bytes: int, allow_hardlinks: bool = False) -> None:
        if not roots:
            raise ValueError("the sandbox needs at least one root")
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.max_file_bytes = max_file_bytes
        self.allow_hardlinks = allow_hardlinks

    @classmethod
    def from_settings(cls, settings: Settings) -> Sandbox:
        """Roots from settings.tools.sandbox_roots, default ``<data_dir>/sandbox``; created if missing."""
        roots = list(settings.tools.sandbox_roots) or [settings.data_dir / "sandbox"]
        for root in roots:
            Path(root).expanduser().mkdir(parents=True, exist_ok=True)
        return cls([Path(r).expanduser() for r in roots], settings.tools.max_file_bytes,
                   settings.tools.allow_hardlinked_reads)

    # -- paths ----------------------------------------------------------------------------------
    def resolve(self, path: object, *, must_exist: bool = False, base: Path | None = None) -> Path:
        """The real path of ``path`` if it stays inside a root; raise ``ToolError`` otherwise."""
        raw = _check_raw(path)
        real = Path(os.path.realpath(self._absolute(raw, base)))
        if self.root_of(real) is None:
            raise ToolError(403, f"path '{_short(raw)}' resolves outside the sandbox", "path_outside_sandbox")
        if must_exist and not os.path.lexists(real):
            raise ToolError(404, f"'{_short(raw)}' does not exist", "not_found")
        return real

    def resolve_entry(self, path: object, base: Path | None = None) -> Path:
        """The path of the directory entry ``path`` names: its folder resolved, its last name kept.

        A symlink is the entry itself, not its target (what ``unlink`` and ``lstat`` act on).
        """
        raw = _check_raw(path)
        candidate = self._absolute(raw, base)
        entry = Path(os.path.realpath(candidate.parent)) / candidate.name
        if self.root_of(entry) is None or entry.name in ("", ".", ".."):
            raise ToolError(403, f"path '{_short(raw)}' resolves outside the sandbox", "path_outside_sandbox")
        return entry

    def _absolute(self, raw: str, base: Path | None) -> Path:
        candidate = Path(raw)
        return candidate if candidate.is_absolute() else (base or self.roots[0]) / candidate

    def root_of(self, real: Path) -> Path | None:
        s = str(real)
        for root in self.roots:
            r = str(root)
            if s == r or s.startswith(r.rstrip(os.sep) + os.sep):
                return root
        return None

    def display(self, real: Path) -> str:
        """A path as clients should send it back: relative to the first root, else absolute."""
        root = self.root_of(real)
        if root == self.roots[0]:
            return os.path.relpath(real, root)
        return str(real)

    # -- held directory fds ---------------------------------------------------------------------
    @contextmanager
    def open_dir(self, real: Path, *, create: bool = False) -> Iterator[int]:
        """An fd of directory ``real`` (a checked real path), opened from its root one component at a
        time with ``O_NOFOLLOW``; with ``create``, missing folders are made on the way."""
        root = self.root_of(real)
        if root is None:
            raise ToolError(403, f"'{real}' is outside the sandbox", "path_outside_sandbox")
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in real.relative_to(root).parts:
                if create:
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno == errno.ENOTDIR and _is_symlink_at(fd, part):
                        exc = OSError(errno.ELOOP, "a folder became a symlink")
                    raise _open_error(exc, self.display(real)) from None
                os.close(fd)
                fd = nxt
            yield fd
        finally:
            os.close(fd)

    @contextmanager
    def open_parent(self, real: Path, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """(fd of the folder of ``real``, last name of ``real``); refuses a root itself."""
        if real in self.roots:
            raise ToolError(400, "a sandbox root itself cannot be used here", "invalid_path")
        with self.open_dir(real.parent, create=create) as fd:
            yield fd, real.name

    def lstat(self, real: Path) -> os.stat_result:
        """``lstat`` of a checked path through the held folder fd (404 if it is gone)."""
        if real in self.roots:
            return os.stat(real)
        with self.open_parent(real) as (fd, name):
            try:
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                raise ToolError(404, f"'{self.display(real)}' does not exist", "not_found") from None

    def check_readable(self, st: os.stat_result, shown: str, *, size: bool = True) -> None:
        """Refuse what ``read_bytes`` would refuse: non-regular, hard-linked, too large (``size``)."""
        self._check_regular(st, shown)
        if st.st_nlink > 1 and not self.allow_hardlinks:
            raise ToolError(403, f"'{shown}' has {st.st_nlink} hard links; another of its names may lie "
                                 "outside the sandbox, so it is not read (settings.tools.allow_hardlinked_reads)",
                            "hardlinked_file")
        if size and st.st_size > self.max_file_bytes:
            raise ToolError(413, f"'{shown}' is {st.st_size} bytes; the limit is {self.max_file_bytes}",
                            "file_too_large")

    # -- files ----------------------------------------------------------------------------------
    def read_bytes(self, path: object) -> tuple[Path, bytes]:
        """Contents of a regular file inside the sandbox (at most ``max_file_bytes``)."""
        real = self.resolve(path, must_exist=True)
        shown = _short(str(path))
        if real in self.roots:
            raise ToolError(400, f"'{shown}' is a directory", "is_a_directory")
        with self.open_parent(real) as (dir_fd, name):
            self.check_readable(self._stat_at(dir_fd, name, shown), shown)
            try:
                # O_NOFOLLOW: a symlink swapped in after the check is refused; O_NONBLOCK: a FIFO never hangs
                fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                raise _open_error(exc, shown) from None
        with os.fdopen(fd, "rb") as fh:
            self.check_readable(os.fstat(fh.fileno()), shown)
            data = fh.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise ToolError(413, f"'{shown}' is larger than {self.max_file_bytes} bytes", "file_too_large")
        return real, data

    def check_write(self, path: object, size: int) -> Path:
        """The checks of ``write_atomic`` that need no disk change: size and where the path leads."""
        if size > self.max_file_bytes:
            raise ToolError(413, f"content is {size} bytes; the limit is {self.max_file_bytes}",
                            "file_too_large")
        real = self.resolve(path)
        if real in self.roots:
            raise ToolError(400, "cannot write over a sandbox root", "invalid_path")
        return real

    def write_atomic(self, path: object, data: bytes, *, create_dirs: bool = False,
                     overwrite: bool = True) -> Path:
        """Write a file atomically (temp file in the same held folder + rename)."""
        real = self.check_write(path, len(data))
        shown = _short(str(path))
        if not create_dirs and not os.path.isdir(real.parent):
            raise ToolError(404, f"folder of '{shown}' does not exist (set create_dirs)", "not_found")
        with self.open_parent(real, create=create_dirs) as (dir_fd, name):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                mode = 0o644
            else:
                self._check_regular(st, shown)
                if not overwrite:
                    raise ToolError(409, f"'{shown}' already exists", "file_exists")
                mode = stat.S_IMODE(st.st_mode)
            tmp = f".{name[:100]}.{secrets.token_hex(4)}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fchmod(fh.fileno(), mode)
                    os.fsync(fh.fileno())
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                raise
            os.fsync(dir_fd)
        return real

    def delete_file(self, path: object) -> Path:
        """Remove a file or a symlink (the link itself); never a directory or a root."""
        entry = self.resolve_entry(path)
        shown = _short(str(path))
        if entry in self.roots:
            raise ToolError(400, "cannot delete a sandbox root", "invalid_path")
        with self.open_parent(entry) as (dir_fd, name):
            st = self._stat_at(dir_fd, name, shown)
            if stat.S_ISDIR(st.st_mode):
                raise ToolError(400, f"'{shown}' is a directory; delete_file removes files", "is_a_directory")
            os.unlink(name, dir_fd=dir_fd)  # unlink never follows a symlink
        return entry

    @staticmethod
    def _stat_at(dir_fd: int, name: str, shown: str) -> os.stat_result:
        try:
            return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise ToolError(404, f"'{shown}' does not exist", "not_found") from None

    @staticmethod
    def _check_regular(st: os.stat_result, shown: object) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(400, f"'{shown}' is a directory", "is_a_directory")
        if stat.S_ISLNK(st.st_mode):
            raise ToolError(403, f"'{shown}' became a symlink while it was opened", "path_changed")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(400, f"'{shown}' is not a regular file (device, FIFO or socket)",
                            "not_a_regular_file")


def _is_symlink_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_error(exc: OSError, shown: str) -> ToolError:
    """An open refused by the kernel, as the caller's error (never a 500)."""
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return ToolError(403, f"'{shown}' changed into a symlink while it was opened; refused", "path_changed")
    if exc.errno == errno.ENOENT:
        return ToolError(404, f"'{shown}' does not exist", "not_found")
    if exc.errno == errno.ENOTDIR:
        return ToolError(400, f"a folder of '{shown}' is not a directory", "not_a_directory")
    return ToolError(403, f"cannot open '{shown}': {exc.strerror}", "open_refused")


def _short(text: str, limit: int = 200) -> str:
    """A path for a message: at most ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


def _check_raw(path: object) -> str:
    if not isinstance(path, str) or not path:
        raise ToolError(400, "path must be a non-empty string", "invalid_path")
    if len(path) > MAX_PATH_CHARS:
        raise ToolError(400, f"path is longer than {MAX_PATH_CHARS} characters", "invalid_path")
    if "\x00" in path:
        raise ToolError(400, "path contains a null byte", "invalid_path")
    decoded = path
    for _ in range(3):  # double- and triple-encoded sequences too
        nxt = unquote(decoded)
        if nxt == decoded:
            break
        decoded = nxt
    if decoded != path and ("\x00" in decoded or _has_dotdot(decoded)
                            or decoded.count("/") != path.count("/")):
        raise ToolError(403, f"path '{_short(path)}' contains encoded traversal characters", "path_traversal")
    if _has_dotdot(path):
        raise ToolError(403, f"path '{_short(path)}' contains a '..' component", "path_traversal")
    return path


def _has_dotdot(path: str) -> bool:
    return any(part == ".." for part in path.replace("\\", "/").split("/"))

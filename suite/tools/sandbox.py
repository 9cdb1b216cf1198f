"""The file sandbox: every path a tool touches must resolve, symlinks followed, inside a root.

Rules (each refusal is a ``ToolError`` in the common shape, never a 500):
  * the path is a non-empty string without null bytes (400 ``invalid_path``);
  * no ``..`` component, plain or percent-encoded (``%2e%2e``, double-encoded too) (403);
  * relative paths start at the first root; absolute paths must lie inside a root (403);
  * the real path (``os.path.realpath``) equals a root or starts with ``root + os.sep`` (403), so a
    symlink leading outside is refused;
  * reads and writes touch regular files only (400 for devices, FIFOs, sockets, directories) and at
    most ``max_file_bytes`` (413); writes go to a temp file in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from urllib.parse import unquote

from suite.settings import Settings
from suite.tools.errors import ToolError

MAX_PATH_CHARS = 4096


class Sandbox:
    """Resolves and checks paths against the configured roots; reads and writes safely."""

    def __init__(self, roots: list[Path], max_file_bytes: int) -> None:
        if not roots:
            raise ValueError("the sandbox needs at least one root")
        self.roots = [Path(os.path.realpath(r)) for r in roots]
        self.max_file_bytes = max_file_bytes

    @classmethod
    def from_settings(cls, settings: Settings) -> Sandbox:
        """Roots from settings.tools.sandbox_roots, default ``<data_dir>/sandbox``; created if missing."""
        roots = list(settings.tools.sandbox_roots) or [settings.data_dir / "sandbox"]
        for root in roots:
            Path(root).expanduser().mkdir(parents=True, exist_ok=True)
        return cls([Path(r).expanduser() for r in roots], settings.tools.max_file_bytes)

    # -- paths ----------------------------------------------------------------------------------
    def resolve(self, path: object, *, must_exist: bool = False, base: Path | None = None) -> Path:
        """The real path of ``path`` if it stays inside a root; raise ``ToolError`` otherwise."""
        raw = _check_raw(path)
        candidate = Path(raw)
        if not candidate.is_absolute():
            candidate = (base or self.roots[0]) / candidate
        real = Path(os.path.realpath(candidate))
        if self.root_of(real) is None:
            raise ToolError(403, f"path '{raw}' resolves outside the sandbox", "path_outside_sandbox")
        if must_exist and not os.path.lexists(real):
            raise ToolError(404, f"'{raw}' does not exist", "not_found")
        return real

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
            rel = os.path.relpath(real, root)
            return rel
        return str(real)

    # -- files ----------------------------------------------------------------------------------
    def read_bytes(self, path: object) -> tuple[Path, bytes]:
        """Contents of a regular file inside the sandbox (at most ``max_file_bytes``)."""
        real = self.resolve(path, must_exist=True)
        st = os.stat(real)
        self._check_regular(st, path)
        if st.st_size > self.max_file_bytes:
            raise ToolError(413, f"'{path}' is {st.st_size} bytes; the limit is {self.max_file_bytes}",
                            "file_too_large")
        try:
            # O_NOFOLLOW: a symlink swapped in after the check is refused; O_NONBLOCK: a FIFO never hangs
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise ToolError(403, f"cannot open '{path}': {exc.strerror}", "open_refused") from None
        with os.fdopen(fd, "rb") as fh:
            self._check_regular(os.fstat(fh.fileno()), path)
            data = fh.read(self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:
            raise ToolError(413, f"'{path}' is larger than {self.max_file_bytes} bytes", "file_too_large")
        return real, data

    def write_atomic(self, path: object, data: bytes, *, create_dirs: bool = False,
                     overwrite: bool = True) -> Path:
        """Write a file atomically (temp file in the same folder + rename)."""
        if len(data) > self.max_file_bytes:
            raise ToolError(413, f"content is {len(data)} bytes; the limit is {self.max_file_bytes}",
                            "file_too_large")
        real = self.resolve(path)
        if real in self.roots:
            raise ToolError(400, "cannot write over a sandbox root", "invalid_path")
        if os.path.lexists(real):
            st = os.stat(real)
            self._check_regular(st, path)
            if not overwrite:
                raise ToolError(409, f"'{path}' already exists", "file_exists")
            mode = stat.S_IMODE(st.st_mode)
        else:
            mode = 0o644
        parent = real.parent
        if not parent.is_dir():
            if not create_dirs:
                raise ToolError(404, f"folder of '{path}' does not exist (set create_dirs)", "not_found")
            parent.mkdir(parents=True, exist_ok=True)
            if self.root_of(Path(os.path.realpath(parent))) is None:
                raise ToolError(403, f"path '{path}' resolves outside the sandbox", "path_outside_sandbox")
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{real.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, real)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return real

    def delete_file(self, path: object) -> Path:
        real = self.resolve(path, must_exist=True)
        if real in self.roots:
            raise ToolError(400, "cannot delete a sandbox root", "invalid_path")
        st = os.lstat(real)
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(400, f"'{path}' is a directory; delete_file removes files", "is_a_directory")
        real.unlink()
        return real

    def _check_regular(self, st: os.stat_result, path: object) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(400, f"'{path}' is a directory", "is_a_directory")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(400, f"'{path}' is not a regular file (device, FIFO or socket)",
                            "not_a_regular_file")


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
        raise ToolError(403, f"path '{path}' contains encoded traversal characters", "path_traversal")
    if _has_dotdot(path):
        raise ToolError(403, f"path '{path}' contains a '..' component", "path_traversal")
    return path


def _has_dotdot(path: str) -> bool:
    return any(part == ".." for part in path.replace("\\", "/").split("/"))

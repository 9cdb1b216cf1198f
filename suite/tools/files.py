"""File tools: read, list, search, info, write, edit, delete — all through the sandbox."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from suite.tools.errors import ToolError
from suite.tools.spec import ToolContext, ToolSpec, boolean, integer, schema, string

PATH = string("file path, relative to the sandbox root (or absolute inside it)")
MAX_ENTRIES = 1000


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "other"


def read_file(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    real, data = ctx.sandbox.read_bytes(args["path"])
    try:
        content, encoding = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        content, encoding = base64.b64encode(data).decode(), "base64"
    return {"path": ctx.sandbox.display(real), "size": len(data), "encoding": encoding, "content": content,
            "sha256": hashlib.sha256(data).hexdigest()}


def list_directory(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    real = ctx.sandbox.resolve(args.get("path", "."), must_exist=True)
    hidden = args.get("include_hidden", False)
    entries = []
    with _folder(ctx, real, args.get("path", ".")) as fd, os.scandir(fd) as it:
        for entry in sorted(it, key=lambda e: e.name):
            if not hidden and entry.name.startswith("."):
                continue
            st = entry.stat(follow_symlinks=False)
            entries.append({"name": entry.name, "type": _kind(st.st_mode), "size": st.st_size})
            if len(entries) >= MAX_ENTRIES:
                break
    return {"path": ctx.sandbox.display(real), "entries": entries, "truncated": len(entries) >= MAX_ENTRIES}


@contextmanager
def _folder(ctx: ToolContext, real: Path, shown: object) -> Iterator[int]:
    """A held fd of a directory inside the sandbox (400 if it is not one)."""
    if not stat.S_ISDIR(ctx.sandbox.lstat(real).st_mode):
        raise ToolError(400, f"'{shown}' is not a directory", "not_a_directory")
    with ctx.sandbox.open_dir(real) as fd:
        yield fd


def search_files(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Names matching a glob, optionally containing a text; symlinks are not followed (``fwalk`` on
    held directory fds, so a folder swapped for a symlink mid-walk is not entered)."""
    real = ctx.sandbox.resolve(args.get("path", "."), must_exist=True)
    pattern, needle = args.get("pattern", "*"), args.get("contains")
    limit = min(args.get("max_results", 50), ctx.settings.tools.search_max_results)
    matches: list[dict[str, Any]] = []
    with _folder(ctx, real, args.get("path", ".")) as top:
        for folder, dirs, files, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not fnmatch.fnmatch(name, pattern):
                    continue
                shown = ctx.sandbox.display(Path(os.path.normpath(real / folder / name)))
                if needle is None:
                    matches.append({"path": shown})
                else:
                    lines = _grep(ctx, dir_fd, name, needle)
                    if lines:
                        matches.append({"path": shown, "lines": lines})
                if len(matches) >= limit:
                    return {"matches": matches, "truncated": True}
    return {"matches": matches, "truncated": False}


def _grep(ctx: ToolContext, dir_fd: int, name: str, needle: str) -> list[dict[str, Any]]:
    """Up to 5 lines of a readable file holding ``needle``; a file the sandbox would not read is skipped."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as fh:
        try:
            ctx.sandbox.check_readable(os.fstat(fh.fileno()), name)
        except ToolError:
            return []
        text = fh.read(ctx.sandbox.max_file_bytes).decode("utf-8", errors="replace")
    found = []
    for no, line in enumerate(text.splitlines(), 1):
        if needle in line:
            found.append({"line": no, "text": line[:300]})
            if len(found) >= 5:
                break
    return found


def file_info(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    real = ctx.sandbox.resolve(args["path"], must_exist=True)
    st = ctx.sandbox.lstat(real)
    info = {"path": ctx.sandbox.display(real), "type": _kind(st.st_mode), "size": st.st_size,
            "mtime": st.st_mtime, "mode": oct(stat.S_IMODE(st.st_mode)), "links": st.st_nlink}
    if stat.S_ISREG(st.st_mode) and st.st_size <= ctx.sandbox.max_file_bytes:
        info["sha256"] = hashlib.sha256(ctx.sandbox.read_bytes(args["path"])[1]).hexdigest()
    return info


def _content_bytes(args: dict[str, Any], key: str = "content") -> bytes:
    if args.get("encoding", "utf-8") == "base64":
        try:
            return base64.b64decode(args[key], validate=True)
        except ValueError:
            raise ToolError(400, f"'{key}' is not valid base64", "invalid_content") from None
    return args[key].encode("utf-8")


def write_file(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    data = _content_bytes(args)
    real = ctx.sandbox.write_atomic(args["path"], data, create_dirs=args.get("create_dirs", False),
                                    overwrite=args.get("overwrite", True))
    return {"path": ctx.sandbox.display(real), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def edit_file(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    """Replace ``old_text`` by ``new_text`` (exactly one occurrence unless ``replace_all``)."""
    real, data = ctx.sandbox.read_bytes(args["path"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ToolError(400, "edit_file works on UTF-8 text files", "not_text") from None
    old, new = args["old_text"], args["new_text"]
    count = text.count(old) if old else 0
    if count == 0:
        raise ToolError(400, "old_text was not found in the file", "no_match")
    if count > 1 and not args.get("replace_all", False):
        raise ToolError(409, f"old_text occurs {count} times; set replace_all or give more context",
                        "ambiguous_match")
    edited = text.replace(old, new) if args.get("replace_all") else text.replace(old, new, 1)
    ctx.sandbox.write_atomic(args["path"], edited.encode("utf-8"))
    return {"path": ctx.sandbox.display(real), "replacements": count if args.get("replace_all") else 1,
            "bytes": len(edited.encode("utf-8"))}


def delete_file(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    real = ctx.sandbox.delete_file(args["path"])
    return {"deleted": ctx.sandbox.display(real)}


# -- checks made when a call is requested (before it waits for an approval) -------------------------
def check_write(ctx: ToolContext, args: dict[str, Any]) -> None:
    ctx.sandbox.check_write(args["path"], len(_content_bytes(args)))


def check_edit(ctx: ToolContext, args: dict[str, Any]) -> None:
    ctx.sandbox.check_write(args["path"], len(args["new_text"].encode("utf-8")))
    ctx.sandbox.resolve(args["path"], must_exist=True)


def check_delete(ctx: ToolContext, args: dict[str, Any]) -> None:
    entry = ctx.sandbox.resolve_entry(args["path"])
    if entry in ctx.sandbox.roots:
        raise ToolError(400, "cannot delete a sandbox root", "invalid_path")
    if not os.path.lexists(entry):
        raise ToolError(404, f"'{args['path']}' does not exist", "not_found")


TOOLS = (
    ToolSpec("read_file", "Read file", "Read a text (UTF-8) or binary (base64) file inside the sandbox.",
             read_file, schema(("path",), path=PATH), read_only=True, idempotent=True),
    ToolSpec("list_directory", "List directory", "List the entries of a sandbox directory.",
             list_directory, schema(path=string("directory (default: the sandbox root)", default="."),
                                    include_hidden=boolean("include dot files")),
             read_only=True, idempotent=True),
    ToolSpec("search_files", "Search files",
             "Find files whose name matches a glob and, optionally, whose text contains a string.",
             search_files, schema(path=string("directory to search (default: root)", default="."),
                                  pattern=string("glob on file names", default="*"),
                                  contains=string("text the file must contain"),
                                  max_results=integer("most matches returned", 1, 1000, 50)),
             read_only=True, idempotent=True),
    ToolSpec("file_info", "File info", "Type, size, mode, modification time and sha256 of a path.",
             file_info, schema(("path",), path=PATH), read_only=True, idempotent=True),
    ToolSpec("write_file", "Write file", "Create or replace a file atomically (temp file + rename).",
             write_file, schema(("path", "content"), path=PATH, content=string("file content"),
                                encoding={"type": "string", "enum": ["utf-8", "base64"], "default": "utf-8"},
                                create_dirs=boolean("create missing parent folders"),
                                overwrite=boolean("replace an existing file", True)),
             read_only=False, destructive=True, idempotent=True, check=check_write),
    ToolSpec("edit_file", "Edit file", "Replace a unique piece of text in a UTF-8 file (atomic write).",
             edit_file, schema(("path", "old_text", "new_text"), path=PATH,
                               old_text=string("text to replace", minLength=1),
                               new_text=string("replacement text"),
                               replace_all=boolean("replace every occurrence")),
             read_only=False, destructive=True, check=check_edit),
    ToolSpec("delete_file", "Delete file", "Delete a file inside the sandbox.",
             delete_file, schema(("path",), path=PATH), read_only=False, destructive=True, idempotent=False,
             check=check_delete),
)

"""The file sandbox on its own: a corpus of hostile paths escapes zero times; writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from suite.tools.errors import ToolError
from suite.tools.sandbox import Sandbox

SECRET = "outside-secret-7f3a"


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    root = tmp_path / "sandbox"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.txt").write_text("inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    os.symlink(outside / "secret.txt", root / "link_out")
    os.symlink(outside, root / "dir_out")
    os.symlink(root / "docs" / "a.txt", root / "link_in")
    os.symlink("/dev/zero", root / "zero")
    os.mkfifo(root / "fifo")
    (root / "%2e%2e").mkdir()  # a literal folder with that name is harmless, but refused by rule
    return Sandbox([root], max_file_bytes=1000)


def hostile_corpus(outside: Path) -> list[str]:
    return [
        "../outside/secret.txt", "../../etc/passwd", "docs/../../outside/secret.txt", "..", "./..",
        "docs/../..", "/etc/passwd", str(outside / "secret.txt"), "/", "/tmp",
        "link_out", "dir_out/secret.txt", "dir_out", "docs/../link_out",
        "%2e%2e/outside/secret.txt", "%2e%2e%2foutside%2fsecret.txt", "%252e%252e/outside/secret.txt",
        "..%2fetc%2fpasswd", "docs%2f..%2f..%2fetc", "%2E%2E/%2E%2E/etc/passwd",
        "..\\..\\etc\\passwd", "docs/a.txt\x00.png", "\x00", "", "zero", "/dev/zero", "/proc/self/environ",
        "fifo", "a" * 5000,
    ]


def test_hostile_paths_escape_zero_times(box: Sandbox, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    escaped = []
    for path in hostile_corpus(outside):
        try:
            _, data = box.read_bytes(path)
        except ToolError as exc:
            assert exc.status in (400, 403, 404, 413), (path, exc.status)
            continue
        escaped.append((path, data))
    assert escaped == []


def test_writes_never_land_outside(box: Sandbox, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    for path in hostile_corpus(outside):
        with pytest.raises(ToolError):
            box.write_atomic(path, b"pwned", create_dirs=True)
    assert (outside / "secret.txt").read_text() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_errors_are_clear(box: Sandbox) -> None:
    cases = {"../x": (403, "path_traversal"), "/etc/passwd": (403, "path_outside_sandbox"),
             "link_out": (403, "path_outside_sandbox"), "a\x00b": (400, "invalid_path"),
             "%2e%2e/x": (403, "path_traversal"), "fifo": (400, "not_a_regular_file"),
             "docs": (400, "is_a_directory"), "missing.txt": (404, "not_found")}
    for path, (status, code) in cases.items():
        with pytest.raises(ToolError) as info:
            box.read_bytes(path)
        assert (info.value.status, info.value.code) == (status, code), path


def test_inside_paths_work(box: Sandbox) -> None:
    assert box.read_bytes("docs/a.txt")[1] == b"inside"
    assert box.read_bytes("link_in")[1] == b"inside"  # a symlink that stays inside is fine
    assert box.read_bytes(str(box.roots[0] / "docs" / "a.txt"))[1] == b"inside"
    assert box.resolve(".") == box.roots[0]


def test_oversize_refused(box: Sandbox) -> None:
    (box.roots[0] / "big.bin").write_bytes(b"x" * 1001)
    with pytest.raises(ToolError) as info:
        box.read_bytes("big.bin")
    assert info.value.status == 413
    with pytest.raises(ToolError) as info:
        box.write_atomic("new.bin", b"x" * 1001)
    assert info.value.status == 413


def test_atomic_write_leaves_no_temp_files(box: Sandbox) -> None:
    box.write_atomic("docs/a.txt", b"v2")
    box.write_atomic("deep/er/new.txt", b"new", create_dirs=True)
    assert box.read_bytes("docs/a.txt")[1] == b"v2"
    assert box.read_bytes("deep/er/new.txt")[1] == b"new"
    leftovers = [p for p in box.roots[0].rglob("*.tmp")]
    assert leftovers == []
    with pytest.raises(ToolError) as info:
        box.write_atomic("docs/a.txt", b"v3", overwrite=False)
    assert info.value.status == 409


def test_root_cannot_be_deleted_or_overwritten(box: Sandbox) -> None:
    for op in (lambda: box.delete_file("."), lambda: box.write_atomic(".", b"x")):
        with pytest.raises(ToolError):
            op()
    assert box.roots[0].is_dir()

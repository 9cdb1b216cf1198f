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


# -- races, hard links, symlink deletion (issue 9) --------------------------------------------------
def _swap_after_resolve(monkeypatch, box: Sandbox, folder: Path, outside: Path) -> None:
    """Make ``resolve`` check the real folder, then swap it for a symlink to ``outside`` before the open
    (the parent-directory symlink swap between check and use)."""
    real_resolve = Sandbox.resolve

    def resolve_then_swap(self, path, **kw):
        real = real_resolve(self, path, **kw)
        if folder.is_dir() and not folder.is_symlink():
            folder.rename(folder.with_name(folder.name + "_moved"))
            os.symlink(outside, folder)
        return real

    monkeypatch.setattr(Sandbox, "resolve", resolve_then_swap)


def test_parent_folder_swapped_for_a_symlink_after_the_check_is_refused(box, tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    (outside / "a.txt").write_text(SECRET)
    _swap_after_resolve(monkeypatch, box, box.roots[0] / "docs", outside)
    with pytest.raises(ToolError) as info:
        box.read_bytes("docs/a.txt")
    assert (info.value.status, info.value.code) == (403, "path_changed")


def test_write_through_a_swapped_parent_never_lands_outside(box, tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    _swap_after_resolve(monkeypatch, box, box.roots[0] / "docs", outside)
    with pytest.raises(ToolError) as info:
        box.write_atomic("docs/new.txt", b"pwned")
    assert info.value.status == 403
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_delete_through_a_swapped_parent_deletes_nothing_outside(box, tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    (box.roots[0] / "docs" / "secret.txt").write_text("inside copy")
    real_entry = Sandbox.resolve_entry

    def entry_then_swap(self, path, **kw):
        entry = real_entry(self, path, **kw)
        docs = self.roots[0] / "docs"
        docs.rename(docs.with_name("docs_moved"))
        os.symlink(outside, docs)
        return entry

    monkeypatch.setattr(Sandbox, "resolve_entry", entry_then_swap)
    with pytest.raises(ToolError) as info:
        box.delete_file("docs/secret.txt")
    assert info.value.status == 403 and (outside / "secret.txt").read_text() == SECRET


def test_hard_link_to_an_outside_file_is_not_read(box, tmp_path):
    os.link(tmp_path / "outside" / "secret.txt", box.roots[0] / "hard.txt")
    with pytest.raises(ToolError) as info:
        box.read_bytes("hard.txt")
    assert (info.value.status, info.value.code) == (403, "hardlinked_file")
    assert "allow_hardlinked_reads" in info.value.message
    allowed = Sandbox(box.roots, max_file_bytes=1000, allow_hardlinks=True)
    assert allowed.read_bytes("hard.txt")[1] == SECRET.encode()  # the operator's explicit choice


def test_delete_of_a_symlink_removes_the_link_never_its_target(box, tmp_path):
    outside = tmp_path / "outside"
    assert box.delete_file("link_out") == box.roots[0] / "link_out"
    assert not os.path.lexists(box.roots[0] / "link_out")
    assert (outside / "secret.txt").read_text() == SECRET
    box.delete_file("link_in")  # a link to a file inside: the link goes, the file stays
    assert (box.roots[0] / "docs" / "a.txt").read_text() == "inside"
    box.delete_file("dir_out")
    assert (outside / "secret.txt").exists()
    with pytest.raises(ToolError) as info:
        box.delete_file("docs")
    assert info.value.code == "is_a_directory"
    for path in (".", "/", str(box.roots[0]), "docs/..", "../outside/secret.txt"):
        with pytest.raises(ToolError):
            box.delete_file(path)
    assert (outside / "secret.txt").read_text() == SECRET

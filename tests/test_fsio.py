"""Crash-safe writes (``suite.fsio``): a reader sees the old file or the new one, never half of one —
when the writer is killed with SIGKILL mid-write, and when the disk is full."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import time

import pytest

from suite.fsio import write_atomic, write_json
from suite.testing import MountRefused, fill, small_filesystem

WRITER = """
import sys
from suite.fsio import write_json
path, n = sys.argv[1], 0
while True:
    n += 1
    write_json(path, {"n": n, "pad": "x" * (n % 5000) * 40})
"""


def test_a_file_replaced_whole_with_its_mode(tmp_path):
    target = tmp_path / "settings.json"
    write_json(target, {"a": 1}, mode=0o600)
    write_json(target, {"a": 2}, mode=0o600)
    assert json.loads(target.read_text()) == {"a": 2}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]  # no temporary file left


def test_a_writer_killed_with_sigkill_never_leaves_half_a_file(tmp_path):
    """The fault reproduced: a writer rewriting a JSON file in a loop, killed at 8 random moments."""
    target = tmp_path / "state.json"
    seen = []
    for round_ in range(8):
        before = target.stat().st_ino if target.exists() else None
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)])
        deadline = time.monotonic() + 60  # the writer's start (imports) is slow on a busy box
        while time.monotonic() < deadline and (not target.exists() or target.stat().st_ino == before):
            time.sleep(0.01)  # until this round's writer has replaced the file at least once
        time.sleep(0.013 * round_)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(json.loads(target.read_text())["n"])  # parses: old or new, never torn
    assert all(n > 0 for n in seen)
    leftovers = [p for p in tmp_path.iterdir() if p.name != "state.json"]
    assert all(p.name.endswith(".tmp") for p in leftovers)  # at most a temp file, never the target


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    try:
        with small_filesystem(tmp_path / "small", 1 << 20) as mnt:
            target = mnt / "manifest.json"
            write_json(target, {"version": 1})
            fill(mnt, leave_bytes=0)
            with pytest.raises(OSError) as exc:
                write_atomic(target, "y" * (256 << 10))
            assert exc.value.errno in (28, 122)  # ENOSPC (EDQUOT on quota'd systems)
            assert json.loads(target.read_text()) == {"version": 1}
            assert sorted(p.name for p in mnt.iterdir()) == ["filler.bin", "manifest.json"]
    except MountRefused as exc:
        pytest.skip(str(exc))


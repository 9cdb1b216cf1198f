"""The edge store killed with SIGKILL at its riskiest steps, then reopened: every acknowledged document
is there whole, a document is all of its chunks or none (never a mix of two versions), and the shard
opens and answers. Each fault is reproduced in a child process: at random moments while it writes
documents of 600 chunks (more than one upsert batch), at each crash point of a shard swap
(``suite.faultpoints``), between the two steps of a shrinking re-index, and during a background
optimize (whose optimizer process must die with it)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from suite.faultpoints import ENV
from suite.vectorstore import EdgeStore
from suite.vectorstore.edge import INTENTS_FILE

DIM = 8

# Writes documents and prints each id once replace_document returned (acknowledged). argv: store
# folder, chunks per document, threshold, first document number, then "optimize" to start one and
# keep writing, or "shrink" to re-index d0 shorter.
WRITER = r"""
import random, sys
from suite.vectorstore import EdgeStore, Point
root, chunks, threshold, first, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
store = EdgeStore(root, optimize_threshold=threshold)
store.ensure_collection("c", 8)
rng = random.Random(first)

def doc(name, n, version=0):
    return [Point(name, c, f"{name} v{version} chunk {c}", [rng.random() for _ in range(8)], {"v": version})
            for c in range(n)]

if mode == "shrink":
    store.replace_document("c", "d0", doc("d0", 5, version=2))
    print("d0", flush=True)
    raise SystemExit(0)
if mode == "optimize":
    store.optimize("c", wait=False)
    print("optimizing", flush=True)
n = first
while True:
    store.replace_document("c", f"d{n}", doc(f"d{n}", chunks))
    print(f"d{n}", flush=True)
    n += 1
    if mode == "optimize" and n - first == 3:
        store.optimize("c", wait=True)
        print("optimized", flush=True)
"""


def writer(root: Path, chunks: int, first: int, mode: str = "write", crash_at: str | None = None,
           threshold: int = 100_000) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop(ENV, None)
    if crash_at:
        env[ENV] = crash_at
    return subprocess.Popen([sys.executable, "-c", WRITER, str(root), str(chunks), str(threshold), str(first), mode],
                            stdout=subprocess.PIPE, text=True, env=env)


def acked_lines(proc: subprocess.Popen, kill_after_s: float | None = None, want: int | None = None) -> list[str]:
    """Lines the writer printed; it is SIGKILLed ``kill_after_s`` after its first line (it writes by
    then), or after ``want`` document lines."""
    out, t0, first = [], time.monotonic(), None
    os.set_blocking(proc.stdout.fileno(), False)
    while proc.poll() is None:
        line = proc.stdout.readline()
        if line:
            out.append(line.strip())
            first = first or time.monotonic()
        elif kill_after_s is not None and first is not None and time.monotonic() - first > kill_after_s:
            break
        else:
            time.sleep(0.01)
        if want is not None and sum(1 for x in out if x.startswith("d")) >= want:
            break
        if time.monotonic() - t0 > 120:
            raise AssertionError("the writer made no progress")
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    out += [x.strip() for x in proc.stdout.read().splitlines() if x.strip()]
    proc.stdout.close()
    return out


def chunks_by_doc(store: EdgeStore) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for batch in store.iter_points("c"):
        for p in batch:
            seen.setdefault(p.doc_id, []).append(p.chunk_no)
    return {d: sorted(c) for d, c in seen.items()}


def check_whole(root: Path, acked: list[str], chunks: int) -> dict[str, list[int]]:
    """Reopen: acknowledged documents whole, every document whole or absent, the shard answers."""
    store = EdgeStore(root)
    try:
        found = chunks_by_doc(store)
        assert not [d for d in acked if d.startswith("d") and found.get(d) != list(range(chunks))], "lost"
        assert {d: c for d, c in found.items() if c != list(range(chunks))} == {}, "partial"
        hit = store.search("c", [0.5] * DIM, 3)
        assert len(hit) == min(3, sum(len(c) for c in found.values()))
        return found
    finally:
        store.close()


@pytest.mark.integration
def test_documents_of_600_chunks_are_whole_or_absent_after_kills_at_random_moments(tmp_path):
    root, rng, acked = tmp_path / "edge", random.Random(32), []
    for round_ in range(4):
        acked += acked_lines(writer(root, 600, 1000 * round_), kill_after_s=rng.uniform(0.5, 3.0))
        check_whole(root, acked, 600)
    assert len([d for d in acked if d.startswith("d")]) >= 4  # the kills landed among acknowledged writes


@pytest.mark.parametrize("point", ["edge.swap.live_moved", "edge.swap.incoming_in", "edge.swap.replayed"])
@pytest.mark.integration
def test_a_crash_at_each_step_of_a_shard_swap_loses_nothing(tmp_path, point):
    root = tmp_path / "edge"
    acked = acked_lines(writer(root, 20, 0, "optimize", crash_at=point))  # it kills itself in the swap
    docs = [d for d in acked if d.startswith("d")]
    assert "optimized" not in acked and len(docs) >= 3
    found = check_whole(root, docs, 20)
    store = EdgeStore(root)  # a second open is clean: nothing left over from the swap
    try:
        assert not [p for p in (root / "c").iterdir() if p.name not in ("shard", "collection.json")]
        assert store.count("c") == 20 * len(found)
    finally:
        store.close()


@pytest.mark.integration
def test_a_shrinking_reindex_cut_between_its_two_steps_leaves_the_new_version_whole(tmp_path):
    root = tmp_path / "edge"
    acked_lines(writer(root, 12, 0), want=2)  # d0 and d1, 12 chunks each
    acked_lines(writer(root, 12, 0, "shrink", crash_at="edge.replace.upserted"))
    assert (root / "c" / INTENTS_FILE).exists()
    store = EdgeStore(root)
    try:
        chunks = store.document("c", "d0")
        assert [h.chunk_no for h in chunks] == list(range(5)) and {h.metadata["v"] for h in chunks} == {2}
        assert any("interrupted; the new version stands" in n for n in store.notices)
        assert not (root / "c" / INTENTS_FILE).exists()
    finally:
        store.close()


def test_a_shrinking_reindex_whose_upsert_never_landed_keeps_the_old_version_whole(tmp_path):
    root = tmp_path / "edge"
    acked_lines(writer(root, 12, 0), want=1)
    # the intent was written, the process died before its upsert reached the WAL
    (root / "c" / INTENTS_FILE).write_text(json.dumps({"d0": {"old": 12, "chunks": 5, "rev": "never-written"}}))
    store = EdgeStore(root)
    try:
        assert [h.chunk_no for h in store.document("c", "d0")] == list(range(12))
        assert any("the old version stands" in n for n in store.notices)
    finally:
        store.close()


@pytest.mark.integration
def test_the_optimizer_dies_with_a_killed_service_and_the_store_reopens_whole(tmp_path):
    root = tmp_path / "edge"
    acked_lines(writer(root, 50, 0), want=60)  # 3,000 points: an optimize that takes a while
    proc = writer(root, 50, 1000, "optimize")
    lines = []
    while "optimizing" not in lines:
        lines.append(proc.stdout.readline().strip())
    deadline = time.monotonic() + 60
    optimizer = []
    while not optimizer and time.monotonic() < deadline:
        optimizer = [c for c in psutil.Process(proc.pid).children() if "edge_optimize" in " ".join(c.cmdline())]
        time.sleep(0.02)
    assert optimizer, "the optimize never reached its child process"
    lines += acked_lines(proc, kill_after_s=0.2)
    assert psutil.wait_procs(optimizer, timeout=30)[1] == []  # gone with its parent, not writing on
    found = check_whole(root, [d for d in lines if d.startswith("d")], 50)
    assert Counter(len(c) for c in found.values()) == Counter({50: len(found)})

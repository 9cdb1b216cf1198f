"""Child process of a background optimize: open a copied shard, run ``optimize()``, flush, close.

Run by ``EdgeStore`` as ``python -m suite.vectorstore.edge_optimize SHARD_DIR DIMENSION THRESHOLD THREADS``
on a copy of a live shard; prints one JSON line. It exists because qdrant-edge-py 0.9.0's
``optimize()`` holds the GIL for its whole run (see ``suite.vectorstore.edge``): in the service's own
process it would stop every request for seconds to minutes.

It dies with its parent (``PR_SET_PDEATHSIG``): a RAG service killed with SIGKILL mid-optimize used
to leave the optimizer running on, writing into a copy the restarted service was deleting.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time

PARENT_ENV = "SUITE_OPTIMIZE_PARENT"  # the pid the child must not outlive


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux); exit now if it died already."""
    parent = int(os.environ.get(PARENT_ENV, "0") or 0)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent's close() still kills it
        return
    if parent and os.getppid() != parent:
        os._exit(3)


def main(argv: list[str] | None = None) -> int:
    die_with_parent()  # first: the imports below take seconds on a busy box
    from suite.vectorstore.edge_config import shard_config  # after argv, so `-h` needs no engine

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        sys.stderr.write(__doc__ or "")
        return 2
    path, dimension, threshold, threads = args[0], int(args[1]), int(args[2]), int(args[3])
    import qdrant_edge

    t0 = time.monotonic()
    # Loading with the config applies the current settings (build threads, indexing threshold) to the copy.
    shard = qdrant_edge.EdgeShard.load(path, shard_config(dimension, threshold, threads))
    load_s = time.monotonic() - t0
    changed = shard.optimize()
    info = shard.info()
    shard.flush()
    shard.close()
    sys.stdout.write(json.dumps({"changed": changed, "load_s": round(load_s, 3),
                                 "total_s": round(time.monotonic() - t0, 3),
                                 "points": info.points_count, "indexed_vectors": info.indexed_vectors_count,
                                 "segments": info.segments_count}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

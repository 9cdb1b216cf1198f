"""Crash points: named steps at which a test makes this process die with SIGKILL, to prove that what
the code writes is recoverable after a crash at exactly that step (as FoundationDB's and TiKV's
failpoints do). Set ``SUITE_CRASH_AT=<name>`` in a process's environment and it kills itself the
first time it reaches ``crash_point(<name>)``; unset (always, outside tests), a crash point is one
dictionary lookup.

The points: ``edge.swap.live_moved`` (the live shard renamed to ``shard.old``),
``edge.swap.incoming_in`` (the optimized copy renamed in, writes not replayed yet),
``edge.swap.replayed`` (replayed and flushed, ``shard.old`` still there),
``edge.replace.upserted`` (a shrunk document's new chunks written, the old tail not deleted yet),
``backup.parts_written`` (every part of a backup set written, no manifest yet).
"""

from __future__ import annotations

import os
import signal

ENV = "SUITE_CRASH_AT"


def crash_point(name: str) -> None:
    """Die here with SIGKILL when ``SUITE_CRASH_AT`` names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)

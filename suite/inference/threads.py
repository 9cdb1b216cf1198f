"""How many CPU threads the batched engine decodes with: all of them, or half while the box is busy.

llama.cpp's CPU threads meet at a barrier after every operation of a decode (hundreds per step), and
libgomp lets a thread that arrives early spin ``GOMP_SPINCOUNT`` times before it sleeps. With idle
cores long spinning is fastest (libgomp's own 300000, what llama-server runs with: the threads never
fall asleep inside a step or between steps); when other processes want the cores, the same spinning
burns the core a preempted peer waits for, and a step that takes 50 ms on a quiet box takes seconds
(measured on a 2-core box at a load average of ~18: one 8-stream level used 5 min of CPU at 300000
against 44 s at 3000). A short spin count avoids that but gives up the quiet box's speed.

``ThreadGovernor`` takes neither side: it reads the engine thread's time spent *waiting for a CPU*
(the kernel's runqueue wait, ``/proc/thread-self/schedstat``, ~1 µs per read) across every decode.
When that wait (a running average, 0.3 for the newest decode) passes a quarter of a decode's wall
time, the engine decodes with half its threads (on 2 cores: one thread, no barrier at all): after
one step when the step waited nearly all of its time, two when half. Once decodes with half the
threads wait for (almost) nothing, it tries all of them again — after 2 s, doubling up to a minute
while each try meets contention again, back to 2 s after a quiet stretch.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

WAIT_HIGH = 0.25  # share of a decode spent waiting for a CPU above which the engine halves its threads
WAIT_LOW = 0.05  # ... and below which (with half the threads) it tries all of them again
EWMA = 0.3  # weight of the newest decode in the running share
SETTLE_STEPS = 5  # decodes with half the threads before a quiet share is trusted
FIRST_RETRY_S, LAST_RETRY_S = 2.0, 60.0
QUIET_STEPS = 500  # decodes at full threads without contention that reset the retry delay


class RunqueueWait:
    """Seconds the calling thread has spent runnable but not running (Linux schedstat); None elsewhere."""

    def __init__(self) -> None:
        self.fd: int | None = None
        try:
            self.fd = os.open(f"/proc/self/task/{threading.get_native_id()}/schedstat", os.O_RDONLY)
        except OSError:  # not Linux, or a kernel without schedstat
            self.fd = None

    def __call__(self) -> float | None:
        if self.fd is None:
            return None
        return int(os.pread(self.fd, 100, 0).split()[1]) / 1e9

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class ThreadGovernor:
    """Decode with all threads, or half of them while other work keeps the engine thread waiting.

    Call ``begin()`` before and ``end()`` after each decode, on the engine thread; ``apply(n)`` sets
    the context's thread count (``llama_set_n_threads``).
    """

    def __init__(self, threads: int, apply: Callable[[int], None], wait: Callable[[], float | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.full = threads
        self.reduced = max(1, threads // 2)
        self.current = threads
        self.apply = apply
        self._wait = wait
        self.clock = clock
        self.share = 0.0  # running share of decode wall time spent waiting for a CPU
        self.steps = 0  # decodes since the last change
        self.retry_s = FIRST_RETRY_S
        self.retry_at = 0.0
        self.changes = 0
        self._start: tuple[float, float] | None = None

    @property
    def active(self) -> bool:
        return self.full > 1

    def begin(self) -> None:
        if not self.active:
            return
        if self._wait is None:
            self._wait = RunqueueWait()  # opened on the engine thread: its own schedstat
        waited = self._wait()
        self._start = None if waited is None else (self.clock(), waited)

    def end(self) -> None:
        if self._start is None:
            return
        t0, w0 = self._start
        self._start = None
        wall = self.clock() - t0
        if wall <= 0:
            return
        share = min(1.0, max(0.0, (self._wait() - w0) / wall))
        self.share += EWMA * (share - self.share)
        self.steps += 1
        now = self.clock()
        if self.current == self.full:  # a slow step at full threads costs the most: react at once
            if self.share > WAIT_HIGH:
                self._set(self.reduced)
                self.retry_at = now + self.retry_s
                self.retry_s = min(2 * self.retry_s, LAST_RETRY_S)
            elif self.steps >= QUIET_STEPS:
                self.retry_s = FIRST_RETRY_S
        elif self.steps >= SETTLE_STEPS and now >= self.retry_at and self.share < WAIT_LOW:
            self._set(self.full)

    def _set(self, n: int) -> None:
        self.apply(n)
        self.current = n
        self.steps = 0
        self.share = 0.0
        self.changes += 1


__all__ = ["RunqueueWait", "ThreadGovernor"]

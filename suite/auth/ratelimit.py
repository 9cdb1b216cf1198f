"""Sliding-window rate limits: at most N events per bucket in any 60 seconds.

The tool server checks, per call, the key's bucket (all tools together) and, when a tool has a
stricter override, the (key, tool) bucket, in one step (``check`` records the call in every bucket
only if all of them have room). Unauthenticated attempts count per client address.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Hashable, Sequence

MAX_BUCKETS = 10_000  # beyond this, idle buckets are dropped (a flood of new ids cannot grow memory)


class RateLimiter:
    """``check`` returns 0 when the call may go on, else the seconds to wait (for Retry-After)."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.limit = per_minute
        self.window_s = window_s
        self._calls: dict[Hashable, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, *buckets: Hashable, now: float | None = None) -> float:
        """One event in each bucket under the default limit (see ``check_limits``)."""
        return self.check_limits([(b, self.limit) for b in buckets], now=now)

    def check_limits(self, limits: Sequence[tuple[Hashable, int]], now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            if len(self._calls) > MAX_BUCKETS:
                self._prune(now)
            wait = 0.0
            queues = []
            for bucket, limit in limits:
                calls = self._calls.setdefault(bucket, deque())
                while calls and calls[0] <= now - self.window_s:
                    calls.popleft()
                if limit <= 0:
                    wait = max(wait, self.window_s)
                elif len(calls) >= limit:
                    wait = max(wait, calls[len(calls) - limit] + self.window_s - now, 0.001)
                queues.append(calls)
            if wait:
                return wait
            for calls in queues:
                calls.append(now)
            return 0.0

    def _prune(self, now: float) -> None:
        for bucket in [b for b, q in self._calls.items() if not q or q[-1] <= now - self.window_s]:
            del self._calls[bucket]

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))

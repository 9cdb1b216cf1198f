"""Sliding-window rate limit per (key, tool): at most N calls in any 60 seconds."""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class RateLimiter:
    """``check`` returns 0 when the call may go on, else the seconds to wait (for Retry-After)."""

    def __init__(self, per_minute: int, window_s: float = 60.0) -> None:
        self.limit = per_minute
        self.window_s = window_s
        self._calls: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str, tool: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            calls = self._calls.setdefault((key_id, tool), deque())
            while calls and calls[0] <= now - self.window_s:
                calls.popleft()
            if len(calls) >= self.limit:
                return max(0.001, calls[0] + self.window_s - now)
            calls.append(now)
            return 0.0

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))

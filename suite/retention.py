"""The retention rule every keeper of dated copies uses (backup sets, the memory API's own backups).

A pure rule with no room of its own: ``suite.backup`` and ``suite.memory`` both import it, neither
imports the other for it.
"""

from __future__ import annotations

import time


def expired(items: list[tuple[str, float]], keep_last: int, keep_days: float,
            now: float | None = None) -> tuple[list[str], list[str]]:
    """Retention over (name, created timestamp) pairs: (kept, expired). Kept: the newest ``keep_last``,
    and anything younger than ``keep_days``."""
    now = now or time.time()
    ordered = sorted(items, key=lambda item: item[1])
    newest = {name for name, _ in ordered[-keep_last:]} if keep_last > 0 else set()
    kept, gone = [], []
    for name, ts in ordered:
        (kept if name in newest or now - ts < keep_days * 86400 else gone).append(name)
    return kept, gone

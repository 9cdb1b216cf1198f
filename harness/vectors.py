"""Vector arithmetic the checks and notebooks share (plain Python: vectors here are a few hundred floats)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def norm(v: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity; NaN when either vector is zero."""
    denominator = norm(a) * norm(b)
    return sum(x * y for x, y in zip(a, b)) / denominator if denominator else float("nan")

"""Split a document into overlapping chunks of at most ``size`` characters, at natural boundaries.

Characters, not tokens, so Korean and English are cut the same way. A cut prefers, in order, a
paragraph break, a sentence end, then any whitespace in the second half of the window; only text
with no whitespace at all is cut mid-word.
"""

from __future__ import annotations

import re

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|(?<=다\.)\s*")
_SPACE = re.compile(r"\s+")


def _last_break(window: str, pattern: re.Pattern[str], floor: int) -> int | None:
    """End offset of the last match of ``pattern`` at or after ``floor`` in ``window``."""
    best = None
    for m in pattern.finditer(window):
        if m.end() >= floor and m.end() < len(window):
            best = m.end()
    return best


def chunk_text(text: str, size: int = 800, overlap: int = 100) -> list[str]:
    """Chunks of ``text``; consecutive chunks share up to ``overlap`` characters of context."""
    if size < 1:
        raise ValueError("chunk size must be positive")
    if not 0 <= overlap < size:
        raise ValueError("overlap must be at least 0 and smaller than the chunk size")
    text = text.strip()
    if not text:
        return []
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = start + size
        if end >= len(text):
            piece = text[start:].strip()
            if piece:
                chunks.append(piece)
            break
        window = text[start:end]
        floor = size // 2
        cut = next((c for c in (_last_break(window, p, floor) for p in (_PARAGRAPH, _SENTENCE, _SPACE))
                    if c is not None), size)
        piece = window[:cut].strip()
        if piece:
            chunks.append(piece)
        next_start = start + cut - overlap if overlap else start + cut
        if overlap:  # begin the overlap at a word boundary, never inside a word
            ws = _SPACE.search(text, next_start, start + cut)
            if ws is not None:
                next_start = ws.end()
        start = max(next_start, start + 1)
        while start < len(text) and text[start].isspace():
            start += 1
    return chunks

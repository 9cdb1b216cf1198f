"""Incremental detokenization with stop strings, the way ``Llama._create_completion`` streams.

Bytes are released only when they are whole UTF-8 characters and cannot be the start of a stop
string; text from the first stop string on is never released.
"""

from __future__ import annotations


def _incomplete_utf8_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` are an unfinished UTF-8 character."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4 if byte & 0xF8 == 0xF0 else 1
        return back if need > back else 0
    return 0


class TextStream:
    """Accumulates a completion's bytes; ``push`` returns (new text, stopped).

    Work per push is bounded by the piece and the stop strings, not by the text so far (a growing
    ``bytearray``, searches that start where a new match could begin, ``endswith`` with bounds
    instead of slices): it runs on the engine thread for every token of every sequence.
    """

    def __init__(self, stop: list[str]) -> None:
        self.stops = [s.encode("utf-8") for s in stop if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.data = bytearray()
        self.released = 0
        self.stopped = False

    def push(self, piece: bytes) -> tuple[str, bool]:
        """Add one token's bytes; release what is safe. After a stop string, nothing more is released."""
        if self.stopped:
            return "", True
        data = self.data
        data += piece
        end = len(data) - _incomplete_utf8_tail(data)
        if not self.stops:
            return self._release(end), False
        start = max(0, self.released - self.longest)
        hits = [i for i in (data.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            return self._release(min(hits)), True
        held = 0
        for s in self.stops:
            for i in range(min(len(s), end), 0, -1):
                if data.endswith(s[:i], 0, end):
                    held = max(held, i)
                    break
        return self._release(max(self.released, end - held)), False

    def finish(self) -> str:
        """Everything not yet released (unless a stop string ended the text)."""
        if self.stopped:
            return ""
        return self._release(len(self.data))

    @property
    def text(self) -> str:
        """The released text so far."""
        return self.data[: self.released].decode("utf-8", errors="ignore")

    def _release(self, end: int) -> str:
        if end <= self.released:
            return ""
        out = self.data[self.released:end]
        self.released = end
        return out.decode("utf-8", errors="ignore")


__all__ = ["TextStream"]

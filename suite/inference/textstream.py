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
    """Accumulates a completion's bytes; ``push`` returns (new text, stopped)."""

    def __init__(self, stop: list[str]) -> None:
        self.stops = [s.encode("utf-8") for s in stop if s]
        self.data = b""
        self.released = 0
        self.stopped = False

    def push(self, piece: bytes) -> tuple[str, bool]:
        """Add one token's bytes; release what is safe. After a stop string, nothing more is released."""
        if self.stopped:
            return "", True
        self.data += piece
        longest = max((len(s) for s in self.stops), default=0)
        start = max(0, self.released - longest)
        hits = [i for i in (self.data.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            return self._release(min(hits)), True
        end = len(self.data) - _incomplete_utf8_tail(self.data)
        held = 0
        for s in self.stops:
            for i in range(min(len(s), end), 0, -1):
                if self.data[:end].endswith(s[:i]):
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
        out = self.data[self.released:end]
        self.released = max(self.released, end)
        return out.decode("utf-8", errors="ignore")


__all__ = ["TextStream"]

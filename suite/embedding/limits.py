"""The seed's input limits: too many texts or too-long texts are cut and reported, never rejected."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Truncation:
    """What ``apply_limits`` cut, in the shape the response reports it."""

    texts_received: int
    texts_dropped: int = 0  # texts beyond max_texts
    cut_texts: list[int] = field(default_factory=list)  # indexes of texts cut to max_chars
    max_texts: int = 0
    max_chars: int = 0

    @property
    def truncated(self) -> bool:
        return bool(self.texts_dropped or self.cut_texts)

    def to_dict(self) -> dict:
        return {"truncated": self.truncated, "texts_received": self.texts_received,
                "texts_dropped": self.texts_dropped, "cut_texts": self.cut_texts,
                "max_texts": self.max_texts, "max_chars": self.max_chars}


def apply_limits(texts: list[str], max_texts: int, max_chars: int) -> tuple[list[str], Truncation]:
    """Keep the first ``max_texts`` texts, each cut to ``max_chars`` characters; report both."""
    report = Truncation(texts_received=len(texts), max_texts=max_texts, max_chars=max_chars)
    kept = texts[:max_texts]
    report.texts_dropped = len(texts) - len(kept)
    out = []
    for i, text in enumerate(kept):
        if len(text) > max_chars:
            report.cut_texts.append(i)
            text = text[:max_chars]
        out.append(text)
    return out, report

"""Where benchmark scripts record their figures: one marked section of ``docs/benchmarks.md`` each."""

from __future__ import annotations

from pathlib import Path

from suite.fsio import write_atomic

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(title: str, body: str, path: Path = DOC) -> None:
    """Replace the block between this section's markers, or append the section with its heading.

    Prose around the markers (a reading of the figures) is kept.
    """
    begin, end = f"<!-- BEGIN {title} -->", f"<!-- END {title} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)

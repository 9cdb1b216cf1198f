"""HTML tables for notebook outputs, readable in JupyterLab and in the executed notebooks' HTML.

JupyterLab right-aligns table cells and stripes rows; a check's title then wraps over three or four
lines beside a long detail. Here every cell is left-aligned (inline styles, which Lab's stylesheet does
not override), a result row holds status, check (title over its id), target, measured and time, and the
detail and evidence are folded under the row (``<details>``), one click away.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from harness.palette import MUTED, WAIVED_COLOR, status_color
from harness.result import CheckResult

CELL = "text-align:left;vertical-align:top;padding:3px 10px 3px 0"
TABLE = "border-collapse:collapse;width:auto;margin:0.5em 0"
Cell = Any  # a value, or (value, css class)


def _td(value: Cell, style: str = "") -> str:
    text, cls = value if isinstance(value, tuple) else (value, "")
    attr = f' class="{html.escape(cls)}"' if cls else ""
    return f"<td{attr} style='{CELL};{style}'>{html.escape('' if text is None else str(text))}</td>"


def html_table(head: Sequence[str], rows: Iterable[Sequence[Cell]], css: str = "") -> str:
    """A plain left-aligned table; a cell given as ``(text, class)`` gets that class; all text escaped."""
    ths = "".join(f"<th style='{CELL}'>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>" for row in rows)
    return (f"<table class='{html.escape(css)}' style='{TABLE}'><thead><tr>{ths}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


def results_table(results: Iterable[CheckResult], waived: Callable[[CheckResult], bool] | None = None) -> str:
    """One ``<tbody>`` per check: its row, then (when it has any) its detail and evidence folded. A
    result ``waived`` says is covered by a waiver in force shows as WAIVED."""
    head = "".join(f"<th style='{CELL}'>{h}</th>" for h in ("status", "check", "target", "measured", "took"))
    bodies = []
    for r in results:
        is_waived = waived is not None and waived(r)
        label, color = ("WAIVED", WAIVED_COLOR) if is_waived else (r.status.label, status_color(r.status))
        check = (f"<td style='{CELL};min-width:16em'>{html.escape(r.title)}<br>"
                 f"<code style='color:{MUTED};font-size:85%'>{html.escape(r.id)}</code></td>")
        row = (f"<tr style='background:transparent;border-top:1px solid #d0d7de'>"
               f"<td class='status' style='{CELL};color:{color};font-weight:bold;white-space:nowrap'>"
               f"{label}</td>{check}{_td(r.target)}{_td(r.measured)}"
               f"{_td(f'{r.duration_s:.2f} s', 'white-space:nowrap')}</tr>")
        folded = _folded(r)
        if folded:
            row += (f"<tr class='detail' style='background:transparent'><td style='{CELL}'></td>"
                    f"<td colspan='4' style='{CELL}'>{folded}</td></tr>")
        bodies.append(f"<tbody class='check'>{row}</tbody>")
    return (f"<table class='harness-results' style='{TABLE}'><thead><tr>{head}</tr></thead>"
            f"{''.join(bodies)}</table>")


def _folded(r: CheckResult) -> str:
    parts = []
    if r.caveat:
        parts.append(f"<div style='font-weight:bold;margin:2px 0'>{html.escape(r.caveat)}</div>")
    if r.detail:
        parts.append(f"<div style='white-space:pre-wrap;margin:2px 0'>{html.escape(r.detail)}</div>")
    if r.evidence:
        parts.append("<div>evidence: " + ", ".join(f"<code>{html.escape(e)}</code>" for e in r.evidence) + "</div>")
    if not parts:
        return ""
    first = r.caveat or (r.detail.splitlines() or [""])[0]
    summary = first if len(first) <= 90 else first[:87] + "…"
    return (f"<details><summary style='cursor:pointer;color:{MUTED}'>{html.escape(summary or 'evidence')}"
            f"</summary>{''.join(parts)}</details>")

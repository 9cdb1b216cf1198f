"""The completion report: one offline HTML file with the verdict, every gate, charts and links.

It reads only files of the run directory (``run.json``, ``steps.json``, ``results/*.json``,
``figures/*``) and, for its "since last run" section, the comparable runs beside it
(``harness.history``), so it can be rebuilt at any time with ``harness report RUN_DIR``. Everything
is inline (CSS, SVG, PNG as data URIs, no script, no web font): it renders the same offline.

Its key figures are every load gate with its 95 % interval, measured ÷ target (headroom: a pass
with less than 20 % left is a warning) and what limits its evidence (contention, extra load, the
requests that would decide it); beside them, the box: CPU steal, CPU outside the stack and the
CPU benchmark of the environment check and of every load scenario.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from harness import attest, history, summary
from harness.ledger import environment_fingerprint, git_sha
from harness.palette import STATUS_COLORS, WAIVED_COLOR, status_color, status_css
from harness.result import CheckResult, Stage, Status, format_interval, format_measure, now_iso
from harness.review import review
from harness.verdict import load_run
from suite.fsio import write_atomic


def _duration_chart(results: list[CheckResult]) -> str | None:
    """Inline SVG: how long each check took, coloured by status."""
    timed = [r for r in results if r.duration_s and r.duration_s > 0]
    if not timed:
        return None
    from harness.charts import pyplot, scale_to_data

    plt = pyplot()
    height = max(2.0, 0.28 * len(timed) + 0.8)
    fig, ax = plt.subplots(figsize=(8, height))
    ax.barh([r.id for r in timed][::-1], [r.duration_s for r in timed][::-1],
            color=[status_color(r.status) for r in timed][::-1])
    log = scale_to_data(ax, [r.duration_s for r in timed], axis="x")
    ax.set_xlabel("seconds" + (" (log scale)" if log else ""))
    ax.set_title("Time per check")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.find("<svg"):]


def _figures(run_dir: Path) -> list[dict[str, str]]:
    """Figures runbooks saved under ``figures/``: SVG inlined, PNG embedded as data URIs."""
    out = []
    for path in sorted((run_dir / "figures").glob("*")):
        if path.suffix == ".svg":
            text = path.read_text()
            out.append({"title": path.stem.replace("_", " "), "svg": text[text.find("<svg"):]})
        elif path.suffix == ".png":
            data = base64.b64encode(path.read_bytes()).decode()
            out.append({"title": path.stem.replace("_", " "), "png": f"data:image/png;base64,{data}"})
    return out


def _since_last_run(run_dir: Path) -> dict[str, Any] | None:
    """The diff against the previous comparable run, for the report's "since last run" section."""
    previous = history.previous_run(run_dir)
    if previous is None:
        return None
    change = history.diff(previous.run.path, run_dir)
    deltas = [d for d in change.deltas if d.better is not None]
    return {"previous": previous, "diff": change, "href": f"../{previous.run_id}/report.html",
            "deltas": deltas, "quiet": len(change.deltas) - len(deltas), "noise_pct": f"{history.NOISE_PCT:g}",
            "min_history": history.MIN_HISTORY}


def load_gates(results: list[CheckResult]) -> list[CheckResult]:
    """The key figures: every load gate and figure with a value (not the server view or the box)."""
    return [r for r in results if r.stage is Stage.LOAD and r.value is not None
            and not r.id.endswith((".server", ".box", ".gpu_memory")) and r.status is not Status.SKIP]


def box_rows(results: list[CheckResult]) -> list[CheckResult]:
    """What the box did: the environment's contention check and each load scenario's reading."""
    return [r for r in results if r.id == "env.cpu.contention" or (r.stage is Stage.LOAD and r.id.endswith(".box"))]


def ratio_text(r: CheckResult) -> str:
    """``88 %`` (measured ÷ target) for a gate with one numeric bound, else ``""``."""
    return "" if r.ratio is None else f"{r.ratio * 100:.0f} %"


def target_view(run_dir: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """The target the run certified (``run.json``'s ``target``) with each part's version
    (``target/versions.json``, written by the bring-up runbook)."""
    target = meta.get("target")
    if not target:
        return None
    try:
        versions = json.loads((run_dir / "target" / "versions.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        versions = {}
    parts = [{**p, "version": versions.get(p["name"], "")} for p in target.get("parts", [])]
    return {**target, "parts": parts}


def render(run_dir: Path, title: str = "Completion report") -> str:
    run_dir = Path(run_dir)
    record = load_run(run_dir)
    meta, steps, results, by_runbook = record.meta, record.steps, record.results, record.by_runbook
    # the report step is running while this renders: the run is judged by the steps before it
    seen = review(record, meta.get("run_id", run_dir.name))
    verdict = seen.verdict
    since = _since_last_run(run_dir)
    key_figures = history.key_figures(results)
    groups: dict[Stage, list[CheckResult]] = defaultdict(list)
    for r in results:
        groups[r.stage].append(r)
    order = [stage for stage in Stage if stage in groups]
    env = Environment(loader=PackageLoader("harness", "templates"), autoescape=select_autoescape(["html", "j2"]))
    env.filters["code"] = _code
    template = env.get_template("report.html.j2")

    def evidence_link(item: str) -> dict[str, Any]:
        local = run_dir / item
        return {"text": item, "href": item if local.exists() or not item.startswith("/") else "file://" + item}

    return template.render(
        title=title, meta=meta, run_id=meta.get("run_id", run_dir.name), generated_at=now_iso(),
        verdict=verdict, counts=seen.counts, steps=steps, status_css=status_css(),
        go_color=STATUS_COLORS[Status.PASS], nogo_color=STATUS_COLORS[Status.FAIL],
        groups=[(stage.value, groups[stage], seen.counts_of(groups[stage])) for stage in order], by_runbook=by_runbook,
        chart=_duration_chart(results), figures=_figures(run_dir), evidence_link=evidence_link,
        env=environment_fingerprint(), git_sha=meta.get("git_sha") or git_sha(), json=json, scans=_scans(run_dir),
        since=since, format_measure=format_measure, key_figures=key_figures,
        # the first screen, waivers and next steps (harness.review, harness.summary, harness.attest)
        review=seen, signer=attest.signer_info(), figure_rows=summary.figure_rows(key_figures),
        headroom=summary.headroom, changes=summary.changes(since), waived_color=WAIVED_COLOR,
        # every load gate with its interval and caveat, and the box (docs/verdicts.md)
        load_gates=load_gates(results), box=box_rows(results), format_interval=format_interval,
        ratio_text=ratio_text, target=target_view(run_dir, meta),
    )


def _code(text: str) -> Markup:
    """Escape ``text`` and show its `backquoted` commands and settings as code (next steps, waivers)."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def _scans(run_dir: Path) -> list[dict[str, Any]]:
    """The security scans of the run (``security/scans.json``, written by the security runbook)."""
    path = run_dir / "security" / "scans.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (OSError, ValueError):
        return [{"name": "scans", "status": "fail", "summary": f"{path} is unreadable"}]


def write_report(run_dir: Path, title: str = "Completion report") -> Path:
    run_dir = Path(run_dir)
    return write_atomic(run_dir / "report.html", render(run_dir, title))

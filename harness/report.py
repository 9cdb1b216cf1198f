"""The completion report: one offline HTML file with the verdict, every gate, charts and links.

It reads only files of the run directory (``run.json``, ``steps.json``, ``results/*.json``,
``figures/*``), so it can be rebuilt at any time with ``harness report RUN_DIR``.
"""

from __future__ import annotations

import base64
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from harness.ledger import environment_fingerprint, git_sha
from harness.palette import STATUS_COLORS, status_color, status_css
from harness.result import CheckResult, Stage, Status, load_results, now_iso, summarize
from harness.rundir import RunDir


@dataclass
class Verdict:
    go: bool
    reasons: list[str]

    @property
    def label(self) -> str:
        return "GO" if self.go else "NO-GO"


def decide(steps: list[dict], results: list[CheckResult]) -> Verdict:
    """GO when every runbook ran and passed and no check failed; warnings and skips do not block."""
    reasons = []
    for s in steps:
        status = Status.parse(s.get("status", Status.PENDING))
        if status is not Status.PASS:
            reasons.append(f"runbook {s['notebook']} {status.label.lower()}"
                           + (f": {s['error']}" if s.get("error") else ""))
    failed = [r for r in results if r.status is Status.FAIL]
    reasons += [f"check {r.id} failed (target {r.target}, measured {r.measured})" for r in failed]
    if not results:
        reasons.append("no check results were recorded")
    return Verdict(not reasons, reasons)


def _duration_chart(results: list[CheckResult]) -> str | None:
    """Inline SVG: how long each check took, coloured by status."""
    timed = [r for r in results if r.duration_s and r.duration_s > 0]
    if not timed:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(2.0, 0.28 * len(timed) + 0.8)
    fig, ax = plt.subplots(figsize=(8, height))
    ax.barh([r.id for r in timed][::-1], [r.duration_s for r in timed][::-1],
            color=[status_color(r.status) for r in timed][::-1])
    ax.set_xlabel("seconds")
    ax.set_title("Time per check")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
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


def _load_all(run_dir: Path) -> tuple[dict, list[dict], list[CheckResult], dict[str, list[CheckResult]]]:
    run = RunDir(Path(run_dir))
    meta = run.read_json(run.meta_file, default={})
    steps = run.read_json(run.steps_file, default=[])
    for s in steps:
        s["status"] = Status.parse(s.get("status", Status.PENDING))
    by_runbook: dict[str, list[CheckResult]] = {}
    for path in sorted(run.results.glob("*.json")):
        by_runbook[path.stem] = load_results(path)
    results = [r for rs in by_runbook.values() for r in rs]
    return meta, steps, results, by_runbook


def render(run_dir: Path, title: str = "Completion report") -> str:
    run_dir = Path(run_dir)
    meta, steps, results, by_runbook = _load_all(run_dir)
    # the report step is running while this renders: the run is judged by what ran before it
    judged = [s for s in steps if not s.get("report")]
    verdict = decide(judged, results)
    groups: dict[Stage, list[CheckResult]] = defaultdict(list)
    for r in results:
        groups[r.stage].append(r)
    order = [stage for stage in Stage if stage in groups]
    env = Environment(loader=PackageLoader("harness", "templates"), autoescape=select_autoescape(["html", "j2"]))
    template = env.get_template("report.html.j2")

    def evidence_link(item: str) -> dict[str, Any]:
        local = run_dir / item
        return {"text": item, "href": item if local.exists() or not item.startswith("/") else "file://" + item}

    return template.render(
        title=title, meta=meta, run_id=meta.get("run_id", run_dir.name), generated_at=now_iso(),
        verdict=verdict, counts=summarize(results), steps=steps, status_css=status_css(),
        go_color=STATUS_COLORS[Status.PASS], nogo_color=STATUS_COLORS[Status.FAIL],
        groups=[(stage.value, groups[stage], summarize(groups[stage])) for stage in order], by_runbook=by_runbook,
        chart=_duration_chart(results), figures=_figures(run_dir), evidence_link=evidence_link,
        env=environment_fingerprint(), git_sha=git_sha(), json=json, scans=_scans(run_dir),
    )


def _scans(run_dir: Path) -> list[dict[str, Any]]:
    """The security scans of the run (``security/scans.json``, written by the security runbook)."""
    path = run_dir / "security" / "scans.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (OSError, ValueError):
        return [{"name": "scans", "status": "fail", "summary": f"{path} is unreadable"}]


def write_report(run_dir: Path, title: str = "Completion report") -> Path:
    run_dir = Path(run_dir)
    target = run_dir / "report.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(render(run_dir, title), encoding="utf-8")
    tmp.replace(target)
    return target


def verdict_of(run_dir: Path) -> Verdict:
    _, steps, results, _ = _load_all(Path(run_dir))
    return decide(steps, results)

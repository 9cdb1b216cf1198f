"""The exploration notebooks in ``notebooks/``, executed for real with papermill.

The RAG playground runs against a real phase-2 stack (the ``phase2`` fixture; the kernel finds it through
``SUITE_*`` environment variables, as in ``test_smoke``). The latency explorer reads the samples of a real
small Locust run (``harness.load``) against the same stack, and its percentile table is checked against
values recomputed from ``samples.jsonl``. Without a stack, both must say clearly what is missing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from suite.testing import free_port_offset, stack_env

ROOT = Path(__file__).parents[1]
NOTEBOOKS = ROOT / "notebooks"
RAG = NOTEBOOKS / "rag_playground.ipynb"
LATENCY = NOTEBOOKS / "latency_explorer.ipynb"


def execute(notebook: Path, out: Path, **parameters):
    import papermill

    return papermill.execute_notebook(str(notebook), str(out), parameters=parameters, kernel_name="python3",
                                      cwd=str(NOTEBOOKS), progress_bar=False)


def outputs(nb) -> tuple[list[str], str]:
    """(every HTML output, all printed text) of an executed notebook."""
    htmls, text = [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text.append(out["text"])
            elif "text/html" in out.get("data", {}):
                htmls.append(out["data"]["text/html"])
    return htmls, "".join(text)


def images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


class _Tables(HTMLParser):
    """Tables of an HTML fragment: ``(css class, header, rows of (cell text, cell class))``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[str], list[list[tuple[str, str]]]]] = []
        self._cell: list[str] | None = None
        self._cls = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.tables.append((attrs.get("class") or "", [], []))
        elif tag == "tr" and self.tables:
            self.tables[-1][2].append([])
        elif tag in ("td", "th"):
            self._cell, self._cls = [], attrs.get("class") or ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell)
            if tag == "th":
                self.tables[-1][1].append(text)
            else:
                self.tables[-1][2][-1].append((text, self._cls))
            self._cell = None


def tables(htmls: list[str]):
    parser = _Tables()
    for fragment in htmls:
        parser.feed(fragment)
    return [(cls, head, [r for r in rows if r]) for cls, head, rows in parser.tables]


# -- stored notebooks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("notebook", [RAG, LATENCY], ids=lambda p: p.stem)
def test_notebooks_are_stored_clean_with_typed_parameters(notebook):
    from harness.params import declared_parameters

    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "store notebooks without outputs"
    assert "parameters" in code[0].metadata.get("tags", [])
    params = declared_parameters(notebook)
    expected = ({"collection": "str", "query": "str", "top_k": "int", "docs_file": "str"} if notebook == RAG
                else {"run_dir": "str", "scenario": "str"})
    assert {k: params[k].type_name for k in expected} == expected
    assert all(p.type_name != "None" for p in params.values())


@pytest.mark.integration
def test_rag_playground_says_how_to_start_the_stack(tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("SUITE_PORT_OFFSET", str(free_port_offset()))  # nothing listens there
    with pytest.raises(PapermillExecutionError) as info:
        execute(RAG, tmp_path / "out.ipynb")
    assert info.value.ename == "StackNotUp"
    assert "suite up --phase 2" in info.value.evalue


@pytest.mark.integration
def test_latency_explorer_says_when_there_are_no_samples(tmp_path):
    from papermill.exceptions import PapermillExecutionError

    (tmp_path / "runs" / "no-load" / "results").mkdir(parents=True)  # a run without load samples
    with pytest.raises(PapermillExecutionError) as info:
        execute(LATENCY, tmp_path / "out.ipynb", runs_root=str(tmp_path / "runs"))
    assert info.value.ename == "NoLoadSamples"
    assert "no run under" in info.value.evalue and "has load samples" in info.value.evalue


def _samples(folder: Path, ok: bool, n: int, t0: float) -> None:
    folder.mkdir(parents=True)
    lines = [json.dumps({"name": "code completion", "start": t0 + i, "ms": 120.0 + i, "ok": ok,
                         "error": None if ok else "ConnectError: [Errno 111] Connection refused"}) for i in range(n)]
    (folder / "samples.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.integration
def test_latency_explorer_passes_over_runs_whose_requests_all_failed_and_says_so(tmp_path):
    """A load runbook run by hand against no stack leaves only refused connections: not 'the newest run'."""
    from harness.load.explore import NoLoadSamples, choose_run

    runs_root = tmp_path / "runs"
    _samples(runs_root / "good" / "load" / "code", ok=True, n=6, t0=1000.0)
    _samples(runs_root / "refused" / "load" / "code", ok=False, n=40, t0=2000.0)
    os.utime(runs_root / "good" / "load" / "code" / "samples.jsonl", (time.time() - 600, time.time() - 600))
    choice = choose_run("", runs_root)
    assert choice.run == (runs_root / "good").resolve()
    assert choice.passed_over == ["refused: all 40 samples failed (mostly: ConnectError: [Errno 111] Connection refused)"]
    assert "1 newer run(s) passed over" in choice.reason
    named = choose_run(str(runs_root / "refused"), runs_root)  # named explicitly: shown, with a note
    assert named.run == (runs_root / "refused").resolve() and "all 40 samples failed" in named.reason

    nb = execute(LATENCY, tmp_path / "out.ipynb", runs_root=str(runs_root))
    _, text = outputs(nb)
    assert f"run: {(runs_root / 'good').resolve()}" in text
    assert "passed over refused: all 40 samples failed" in text and "code: 6 measured" in text

    shutil.rmtree(runs_root / "good")
    with pytest.raises(NoLoadSamples, match="has only failed requests .*refused: all 40 samples failed"):
        choose_run("", runs_root)


# -- against a real stack -------------------------------------------------------------------------------
@pytest.mark.integration
def test_rag_playground_on_a_phase_2_stack(phase2, tmp_path, monkeypatch):
    from harness.smoke import rag

    for name, value in stack_env(phase2).items():
        monkeypatch.setenv(name, value)
    # retrieval only: two answers from the CPU model would cost 15-45 s on 2 cores (answer=True is the default)
    nb = execute(RAG, tmp_path / "rag.ipynb", collection="playground-test", top_k=3, answer=False)
    htmls, text = outputs(nb)
    found = {cls: (head, rows) for cls, head, rows in tables(htmls) if cls != "sources"}
    sources = [rows for cls, _, rows in tables(htmls) if cls == "sources"]

    docs = rag.load_data()["documents"]
    assert len(found["documents"][1]) == len(docs)
    assert len(sources) == 2  # English, then Korean
    for rows, expect in zip(sources, ("qdrant-snapshots", "gpu-memory")):
        assert 1 <= len(rows) <= 3
        ids = [text for row in rows for text, cls in row if cls == "doc-id"]
        assert expect in ids, ids
        scores = [float(text) for row in rows for text, cls in row if cls == "score"]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    assert "GPU 메모리가 부족하면" in "".join(htmls)  # the Korean query is shown with its sources
    assert "answer=False: retrieval only" in text

    head, rows = found["cosines"]
    assert len(rows) == len(docs)
    for row in rows:
        cells = dict(zip(head, (text for text, _ in row)))
        for lang in ("en", "ko"):
            cos = float(cells[f"cos({lang} query)"])
            assert -1 <= cos <= 1
            if cells[f"rag score ({lang})"] != "-":  # one chunk per document: store score == cosine
                assert abs(float(cells[f"rag score ({lang})"]) - cos) < 1e-3, cells
    cross = float(text.split("cosine between the two queries: ")[1].split()[0])
    assert -1 <= cross <= 1


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def _expected_rows(samples_file: Path) -> dict[str, list[str]]:
    """Row name -> count and min/p50/p90/p95/p99/max as the table shows them, from the raw JSON lines."""
    raw = [json.loads(line) for line in samples_file.read_text().splitlines() if line.strip()]
    measured = [r for r in raw if not r.get("warmup")]
    rows = {}
    for name in dict.fromkeys(r["name"] for r in measured):
        chosen = [r for r in measured if r["name"] == name]
        series = {name: [r["ms"] for r in chosen]}
        for key, attr in (("ttft", "ttft_ms"), ("itl", "itl_ms"), ("tps", "tps")):
            if values := [r[attr] for r in chosen if r.get(attr) is not None]:
                series[f"{name} · {key}"] = values
        for row, values in series.items():
            rows[row] = [str(len(values)), f"{min(values):.1f}",
                         *(f"{_nearest_rank(values, p):.1f}" for p in (50, 90, 95, 99)), f"{max(values):.1f}"]
    return rows


@pytest.mark.integration
def test_latency_explorer_on_a_real_load_run(phase2, tmp_path):
    from harness.load import plan, run_plan
    from harness.notebook import Runbook

    runs_root = tmp_path / "runs"
    run_dir = runs_root / "explore-me"
    rb = Runbook.open(str(run_dir), "05_load")  # what the load runbook does, in small
    scs = plan("embedding,chat", users=2, requests=4, max_tokens=6, thresholds="p95<120s,fail_ratio<0.5")
    for outcome in run_plan(scs, phase2, run_dir / "load", phase=2, warmup_s=0.5, base=run_dir):
        rb.record(outcome.results)
        assert outcome.run.samples and outcome.run.exit_code == 0, outcome.run.log_tail()

    # an older run with samples and a newer one without: the newest run *with samples* is picked
    old = runs_root / "older" / "load" / "embedding"
    old.mkdir(parents=True)
    shutil.copy(run_dir / "load" / "embedding" / "samples.jsonl", old / "samples.jsonl")
    os.utime(old / "samples.jsonl", (time.time() - 3600, time.time() - 3600))
    (runs_root / "newer-no-load" / "results").mkdir(parents=True)

    nb = execute(LATENCY, tmp_path / "latency.ipynb", runs_root=str(runs_root))
    htmls, text = outputs(nb)
    assert f"run: {run_dir.resolve()}" in text
    assert "embedding: " in text and "chat: " in text and "2 users" in text

    table = next(rows for _, head, rows in tables(htmls) if "p95" in head)
    head = next(head for _, head, _ in tables(htmls) if "p95" in head)
    shown: dict[str, dict[str, list[str]]] = {}
    for row in table:
        cells = dict(zip(head, (t for t, _ in row)))
        shown.setdefault(cells["scenario"], {})[cells["row"]] = [
            cells[k] for k in ("count", "min", "p50", "p90", "p95", "p99", "max")]
    for name in ("embedding", "chat"):
        assert shown[name] == _expected_rows(run_dir / "load" / name / "samples.jsonl"), name
    assert {"chat stream · ttft", "chat stream · itl", "chat stream · tps"} <= set(shown["chat"])
    assert "chat: ttft_ms p50" in text  # the streamed-chat distributions
    assert images(nb) >= 3  # latency over time, histogram, TTFT/ITL/tps

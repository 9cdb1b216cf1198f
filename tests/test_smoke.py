"""The smoke runbook: its data, its phase-1 skips, and a full run of the notebook on a phase-2 stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.result import Status, load_results
from harness.smoke import embedding, rag
from suite.settings import Settings
from suite.testing import stack_env

ROOT = Path(__file__).parents[1]
NOTEBOOK = ROOT / "runbooks" / "03_smoke.ipynb"


def test_smoke_data_is_mixed_korean_english_and_consistent():
    data = rag.load_data()
    ids = {d["id"] for d in data["documents"]}
    assert len(ids) == len(data["documents"]) >= 6
    assert {d["metadata"]["lang"] for d in data["documents"]} == {"ko", "en"}
    assert all(q["expect"] in ids for q in data["queries"])
    assert {q["lang"] for q in data["queries"]} == {"ko", "en"}
    assert any(q.get("answer") for q in data["queries"])


def test_phase_1_skips_phase_2_steps_with_a_reason(tmp_path):
    # nothing listens on these ports: a skipped step must not even try
    settings = Settings(data_dir=tmp_path, port_offset=50000 - 8000 + 241)
    data = rag.load_data()
    results = [rag.check_index(settings, data, phase=1), rag.check_reindex(settings, data, phase=1),
               *rag.check_queries(settings, data, phase=1), embedding.check_embed(settings, phase=1),
               embedding.check_openai_embeddings(settings, phase=1)]
    assert all(r.status is Status.SKIP for r in results)
    assert all("phase 1" in r.detail for r in results)


@pytest.mark.integration
def test_a_check_whose_service_refuses_the_connection_fails_with_no_answer(tmp_path):
    # the frame every phase check shares: at the stack's phase it runs, times, and a refused connection
    # (nothing listens on these ports) is a FAIL saying no answer came, never a pass or a skip
    settings = Settings(data_dir=tmp_path, port_offset=50000 - 8000 + 241)
    (tmp_path / "auth").mkdir()
    results = [rag.check_index(settings, rag.load_data(), phase=2), embedding.check_embed(settings, phase=2),
               embedding.check_openai_embeddings(settings, phase=2)]
    assert [r.status for r in results] == [Status.FAIL] * 3
    assert all(r.measured == "no answer" and "ConnectError" in r.detail and r.target for r in results)


def test_the_check_frame_skips_below_its_phase_and_lets_unexpected_errors_through():
    from harness.smoke.http import Check

    ran = []
    skipped = Check("smoke.x", "x", "HTTP 200", needs_phase=3).run(2, lambda c: ran.append(c))
    assert skipped.status is Status.SKIP and skipped.stage == "smoke" and ran == []
    passed = Check("smoke.x", "x", "HTTP 200", needs_phase=1).run(1, lambda c: c.result(True, detail="ok"))
    assert passed.status is Status.PASS and passed.target == "HTTP 200" and passed.unit == "ms"

    def broken(c):
        raise KeyError("a bug in the check, not the service")

    with pytest.raises(KeyError):
        Check("smoke.x", "x", "HTTP 200", needs_phase=1).run(1, broken)


def test_notebook_declares_typed_parameters():
    from harness.params import declared_parameters

    params = declared_parameters(NOTEBOOK)
    assert {"run_dir", "run_id", "phase"} <= set(params)
    assert params["phase"].type_name == "int" and params["run_dir"].type_name == "str"


@pytest.mark.integration
def test_smoke_notebook_passes_on_a_phase_2_stack(phase2, tmp_path, monkeypatch):
    import papermill

    for name, value in stack_env(phase2).items():
        monkeypatch.setenv(name, value)
    run_dir = tmp_path / "run"
    papermill.execute_notebook(str(NOTEBOOK), str(tmp_path / "03_smoke.ipynb"),
                               parameters={"run_dir": str(run_dir), "run_id": "test", "phase": 2},
                               kernel_name="python3", cwd=str(NOTEBOOK.parent), progress_bar=False)
    results = {r.id: r for r in load_results(run_dir / "results" / "03_smoke.json")}
    failed = {k: r.detail for k, r in results.items() if r.status is Status.FAIL}
    assert not failed
    assert results["smoke.gateway.failover"].status is Status.PASS
    assert results["smoke.gateway.restore"].status is Status.PASS
    assert results["smoke.embed.pair"].status is Status.PASS
    queries = [r for k, r in results.items() if k.startswith("smoke.rag.query.")]
    assert queries and all(r.status is not Status.SKIP for r in queries)
    assert any(k.endswith(".ko") for k in results) and any(k.endswith(".en") for k in results)
    ran = [r for r in results.values() if r.status is not Status.SKIP]
    assert all(r.measured and r.duration_s > 0 for r in ran)
    assert results["smoke.tools"].status is Status.SKIP  # phase-3 checks wait for phase 3
    assert "phase >= 3" in results["smoke.tools"].target
    assert (run_dir / "figures" / "smoke_latency.svg").exists()
    json.dumps([r.to_dict() for r in results.values()])  # the report can serialise every result

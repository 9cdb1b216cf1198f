"""A runbook that needs the stack stops with one line when it is not up — also run by hand through
papermill, with no `harness run` around it — and never passes a gate over closed ports."""

from __future__ import annotations

import json
import socket
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlparse

import pytest

from harness.notebook import Runbook, ServicesDown
from harness.preflight import unreachable
from harness.result import Status, load_results
from suite import services
from suite.settings import Settings
from suite.testing import free_port_offset

RUNBOOKS = Path(__file__).resolve().parent.parent / "runbooks"


def test_each_runbook_after_bring_up_checks_its_services_first():
    """Through its target: our suite's services of the phase (``needs_services``), or a target file's parts."""
    for path in sorted(RUNBOOKS.glob("0[2-8]*_*.ipynb")):  # 06b_durability too
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        setup = "".join(code[1]["source"])  # the cell after the parameters
        assert "tgt = open_target(target, settings, phase)" in setup, path.name
        assert "rb.needs_target(tgt" in setup, path.name
        assert setup.index("Runbook.open") < setup.index("rb.needs_target"), path.name


def test_a_target_file_s_part_that_is_down_stops_the_runbook_with_one_line(tmp_path):
    from harness.target import parse, suite_target

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = parse({"name": "theirs", "gateway": {"kind": "litellm", "base_url": f"http://127.0.0.1:{port}"}})
    target._source = str(tmp_path / "theirs.toml")
    rb = Runbook.open(str(tmp_path / "by-hand"), "03_smoke")
    with pytest.raises(ServicesDown) as info:
        rb.needs_target(target)
    line = str(info.value)
    assert line == (f"gateway http://127.0.0.1:{port} not reachable — start them, or fix their base_url in "
                    f"{tmp_path / 'theirs.toml'}")
    [result] = load_results(rb.results_file)
    assert (result.id, result.status) == ("smoke.services", Status.FAIL)
    settings = Settings(data_dir=tmp_path / "data", port_offset=free_port_offset())
    with pytest.raises(ServicesDown, match="run 01_bring_up or"):  # our own suite: the same check as before
        Runbook.open(str(tmp_path / "ours"), "03_smoke").needs_target(suite_target(settings, 1))


def test_a_stack_that_is_not_up_stops_the_runbook_with_one_line(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", port_offset=free_port_offset())
    rb = Runbook.open(str(tmp_path / "by-hand"), "05_load")  # a folder harness run did not make: manual
    with pytest.raises(ServicesDown) as info:
        rb.needs_services(settings, 1)
    gateway = settings.port("gateway")
    line = str(info.value)
    assert line.startswith("inference-chat :") and f"gateway :{gateway}" in line and "\n" not in line
    assert line.endswith(f"not reachable — run 01_bring_up or `SUITE_PORT_OFFSET={settings.port_offset} "
                         f"SUITE_DATA_DIR={settings.data_dir} suite up --phase 1`")
    assert info.value._render_traceback_() == [f"ServicesDown: {line}"]  # what Jupyter shows: no traceback
    [result] = load_results(rb.results_file)
    assert (result.id, result.status, result.detail) == ("load.services", Status.FAIL, line)
    step = rb.run.read_json(rb.run.steps_file)[0]
    assert step["status"] == "fail" and step["error"] == line


def test_a_listening_stack_passes_the_check(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", port_offset=free_port_offset())
    with ExitStack() as stack:
        for spec in services.for_phase(1):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", urlparse(settings.url(spec.name)).port))
            sock.listen()
        assert unreachable(settings, 1) == []
        assert [d.split(" :")[0] for d in unreachable(settings, 2)] == ["embedding", "rag"]
        Runbook.open(str(tmp_path / "run"), "03_smoke").needs_services(settings, 1)  # no raise


@pytest.mark.integration
def test_05_load_by_hand_with_no_stack_stops_with_one_line_and_no_pass(tmp_path, monkeypatch):
    """The issue's check: papermill, no `harness run`, nothing listening. Before, the warm-up fired
    8,333 requests at the closed port and `load.code.p95` passed at 0.569 ms."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    offset = free_port_offset()
    monkeypatch.setenv("SUITE_PORT_OFFSET", str(offset))
    monkeypatch.setenv("SUITE_DATA_DIR", str(tmp_path / "data"))
    run = tmp_path / "by-hand"  # a folder no `harness run` made: the runbook treats it as a manual run
    with pytest.raises(PapermillExecutionError) as info:
        papermill.execute_notebook(str(RUNBOOKS / "05_load.ipynb"), str(tmp_path / "05_load.ipynb"),
                                   parameters={"run_dir": str(run), "profile": "quick", "phase": 1},
                                   kernel_name="python3", cwd=str(RUNBOOKS), progress_bar=False, log_output=False)
    error = info.value
    assert error.ename == "ServicesDown"
    assert error.evalue.endswith("suite up --phase 1`") and f"gateway :{8000 + offset}" in error.evalue
    assert error.traceback == [f"ServicesDown: {error.evalue}"]  # one line, nothing else
    results = load_results(run / "results" / "05_load.json")
    assert [(r.id, r.status) for r in results] == [("load.services", Status.FAIL)]  # no PASS, no load fired
    assert not any((run / "load").glob("*/samples*.jsonl"))  # no scenario ran
    assert json.loads((run / "steps.json").read_text())[0]["status"] == "fail"

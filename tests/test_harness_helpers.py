"""Harness helpers: coroutines from a kernel, vectors, and the one path to the stack (the suite CLI)."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys

from harness import stack
from harness.coroutines import run_coroutine
from harness.envcheck.ports import check_ports
from harness.result import Status
from harness.smoke import gateway
from harness.vectors import cosine
from suite.settings import Settings
from suite.testing import free_port_offset


def test_run_coroutine_works_inside_a_running_loop_as_in_a_kernel():
    async def answer():
        await asyncio.sleep(0)
        return 42

    async def inside_a_kernel():
        return run_coroutine(answer())  # asyncio.run here would raise

    assert run_coroutine(answer()) == 42
    assert asyncio.run(inside_a_kernel()) == 42


def test_cosine():
    assert cosine([1, 0], [1, 0]) == 1.0 and cosine([1, 0], [0, 2]) == 0.0
    assert abs(cosine([1, 1], [-1, -1]) + 1) < 1e-12
    assert math.isnan(cosine([0, 0], [1, 0]))


def test_the_suite_cli_child_sees_exactly_the_callers_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("SUITE_INFERENCE__CHAT__N_CTX", "999")  # must not leak over the caller's value
    settings = Settings(data_dir=tmp_path, port_offset=1234, inference={"chat": {"n_ctx": 512}},
                        gateway={"retries": 3})
    code = "from suite.settings import Settings; print(Settings().model_dump_json())"
    out = subprocess.run([sys.executable, "-c", code], env=stack.cli_env(settings), capture_output=True,
                         text=True, check=True)
    assert json.loads(out.stdout) == json.loads(settings.model_dump_json())


def test_port_check_names_a_strangers_port_and_asks_the_cli_about_ours(tmp_path):
    settings = Settings(data_dir=tmp_path, port_offset=free_port_offset())
    assert check_ports(settings, 1).status is Status.PASS
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", settings.port("gateway")))
        blocker.listen()
        result = check_ports(settings, 1)  # `suite status` says no service of ours runs
    assert result.status is Status.FAIL
    assert f"{settings.port('gateway')} for gateway held by pid" in result.detail


def test_failover_is_skipped_when_the_cli_reports_no_chat_upstream(tmp_path):
    settings = Settings(data_dir=tmp_path, port_offset=free_port_offset())
    [result] = gateway.check_failover(settings, phase=1)
    assert result.status is Status.SKIP and "inference-chat is not running" in result.detail


def test_stop_command_names_the_stack(tmp_path):
    settings = Settings(data_dir=tmp_path, port_offset=2000)
    assert stack.stop_command(["gateway", "rag"], settings) == \
        f"SUITE_PORT_OFFSET=2000 SUITE_DATA_DIR={tmp_path.resolve()} suite down gateway rag"

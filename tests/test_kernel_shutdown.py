"""Kernels of `harness run` shut down quietly: an idle kernel is asked to stop and is never sent SIGINT.

jupyter_client's own shutdown sends SIGINT to the kernel's whole process group first; a kernel still
finishing a message then logs ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` (it did during
02_health and 03_smoke of a GO run), and every process the kernel started in its group gets the SIGINT
too. The witness here is such a process: it records any SIGINT it receives. A kernel busy in a cell
still goes down, through the interrupt, within the shutdown's deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from jupyter_client.manager import AsyncKernelManager

from harness.sequence import IPCKernelManager

WITNESS = '''
import os, signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
signal.signal(signal.SIGINT, lambda *a: out.write_text("SIGINT"))
out.write_text(str(os.getpid()))
time.sleep(60)
'''


async def _shutdown_with_witness(manager_class, marker: Path) -> tuple[str, float, int]:
    km = manager_class(kernel_name="python3")
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=120)
        # a process in the kernel's process group that is not its child (as `sh -c '… &'` leaves it)
        code = (f"import subprocess, sys, time, pathlib\n"
                f"subprocess.run(['sh', '-c', '\"$0\" -c \"$1\" \"$2\" &', sys.executable, {WITNESS!r}, "
                f"{str(marker)!r}])\n"
                f"while not pathlib.Path({str(marker)!r}).exists(): time.sleep(0.05)\n")
        reply = await kc.execute_interactive(code, timeout=120)
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
    pid = int(marker.read_text())
    t0 = time.monotonic()
    await km.shutdown_kernel()
    took = time.monotonic() - t0
    time.sleep(0.3)  # a signal handler that is about to run
    return marker.read_text(), took, pid


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.integration
def test_an_idle_kernel_is_shut_down_without_an_interrupt(tmp_path):
    seen, took, pid = asyncio.run(_shutdown_with_witness(IPCKernelManager, tmp_path / "ours"))
    _stop(pid)
    assert seen == str(pid), "the kernel's process group got SIGINT at a clean shutdown"
    assert took < 5

    # the detector works: jupyter_client's own manager does interrupt the group
    seen, _, pid = asyncio.run(_shutdown_with_witness(AsyncKernelManager, tmp_path / "theirs"))
    _stop(pid)
    assert seen == "SIGINT"


@pytest.mark.integration
def test_a_kernel_busy_in_a_cell_still_goes_down(tmp_path):
    async def busy() -> tuple[float, bool]:
        km = IPCKernelManager(kernel_name="python3", shutdown_wait_time=2.0)
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=120)
        kc.execute("import time; time.sleep(600)")
        await asyncio.sleep(1.0)
        kc.stop_channels()
        t0 = time.monotonic()
        await km.shutdown_kernel()
        return time.monotonic() - t0, await km.is_alive()

    took, alive = asyncio.run(busy())
    assert not alive and took < 10, took

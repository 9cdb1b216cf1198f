"""Hosts for tests: Linux network namespaces the test creates, joined by veth pairs to a bridge in a
namespace of its own, with addresses the test assigns (a random 10.x.y.0/24). Nothing is created in,
or routed to, the machine's own namespace: the "hosts" reach each other and nothing else.

``Network(["a", "b"])`` as a context manager: ``addr("a")``, ``run("a", cmd)`` / ``popen("a", cmd)``
(``ip netns exec``), and on exit every process it started is killed and every namespace deleted
(their veths go with them). ``unavailable()`` says exactly what fails where namespaces cannot be made
(not root, no ``ip``, a sandbox without CAP_SYS_ADMIN).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def unavailable() -> str | None:
    """None when ``ip netns add`` works here, else what failed (the command and its error)."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on PATH"
    if os.geteuid() != 0:
        return f"`ip netns add` needs root (running as uid {os.geteuid()})"
    name = f"soprobe{os.getpid()}"
    made = _ip("netns", "add", name, check=False)
    if made.returncode != 0:
        return f"`ip netns add {name}` failed: {made.stderr.strip() or made.returncode}"
    _ip("netns", "del", name, check=False)
    return None


class Network:
    def __init__(self, hosts: list[str]) -> None:
        self.hosts = list(hosts)
        tag = f"{os.getpid() % 100000}{random.randrange(100)}"
        self.prefix = f"so{tag}"
        self.switch = f"{self.prefix}sw"
        net = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"
        self.addrs = {h: f"{net}.{i + 1}" for i, h in enumerate(self.hosts)}
        self.procs: list[subprocess.Popen] = []
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.prefix}{host}"

    def addr(self, host: str) -> str:
        return self.addrs[host]

    def __enter__(self) -> Network:
        try:
            _ip("netns", "add", self.switch)
            self.made.append(self.switch)
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i, host in enumerate(self.hosts):
                ns = self.ns(host)
                _ip("netns", "add", ns)
                self.made.append(ns)
                # both ends made inside the namespaces: nothing appears in the machine's own
                _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{i}", "netns", self.switch)
                _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0")
                _ip("-n", self.switch, "link", "set", f"p{i}", "up")
                _ip("-n", ns, "addr", "add", f"{self.addrs[host]}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def command(self, host: str, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *cmd]

    def run(self, host: str, cmd: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(host, cmd), capture_output=True, text=True, timeout=timeout, **kwargs)

    def popen(self, host: str, cmd: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(self.command(host, cmd), start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def pids(self, host: str) -> list[int]:
        """Processes running in ``host``'s namespace."""
        out = _ip("netns", "pids", self.ns(host), check=False).stdout
        return [int(p) for p in out.split()]

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        for ns in self.made:  # whatever still runs in a namespace was started there by this test
            for pid in [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for ns in reversed(self.made):
            _ip("netns", "del", ns, check=False)
        self.made.clear()

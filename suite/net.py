"""Ports on this machine: who holds one, whether one is free, a free one to use."""

from __future__ import annotations

import errno
import socket

import psutil


def _listener(port: int):
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn
    except psutil.Error:
        pass
    return None


def port_pid(port: int) -> int | None:
    """The pid listening on a TCP port, or None (free, or a process this user may not see)."""
    conn = _listener(port)
    return conn.pid if conn is not None and conn.pid else None


def port_holder(port: int) -> str | None:
    """Who listens on a TCP port: 'pid 123 (python)', 'an unknown process', or None when free."""
    conn = _listener(port)
    if conn is None:
        return None
    if not conn.pid:
        return "an unknown process"
    try:
        return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except psutil.Error:
        return f"pid {conn.pid}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """True when ``host:port`` can be bound now (nobody listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


__all__ = ["free_port", "port_free", "port_holder", "port_pid"]

"""API keys for the harness's own requests, made with ``suite keys create`` as an operator would.

No admin bootstrap endpoint exists, on purpose: creating a key needs the stack's data dir, not the
network. The CLI runs in a subprocess through ``harness.stack`` with the caller's settings.
"""

from __future__ import annotations

import json

from harness import stack
from suite.settings import Settings


def make_key(settings: Settings, role: str, name: str = "harness") -> str:
    """A new API key of ``role`` (raises ``RuntimeError`` when the CLI fails)."""
    proc = stack.run_suite(["keys", "create", "--role", role, "--name", name, "--json"], settings, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"suite keys create --role {role} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["key"]

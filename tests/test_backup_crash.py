"""``suite backup create`` killed with SIGKILL at its riskiest step — every part written, no manifest
yet — leaves no set: only a ``.partial`` folder, which no listing, restore or retention takes for a
set, which the next backup cleans up once it is old, and beside which the next backup seals a whole
set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from suite.backup.sets import PARTIAL, clean_partials, list_sets, verify_set
from suite.faultpoints import ENV
from suite.memory.store import MemoryStore
from suite.settings import Settings
from suite.testing import stack_env
from suite.vectorstore import Point, open_store


def backup(settings: Settings, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack_env(settings)}
    env.pop(ENV, None)
    if crash_at:
        env[ENV] = crash_at
    return subprocess.run([sys.executable, "-m", "suite.cli", "backup", "create", "--json"], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.integration
def test_a_backup_killed_before_its_manifest_leaves_no_set(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", port_offset=41100)  # nothing listens: rag part taken directly
    store = open_store(settings)
    store.ensure_collection("docs", 8)
    rng = np.random.default_rng(0)
    store.replace_document("docs", "d", [Point("d", i, f"chunk {i}", rng.standard_normal(8).tolist()) for i in range(6)])
    store.close()
    memory = MemoryStore(settings.memory_db_path)
    memory.add_note("p", "a note the set must hold")
    memory.close()

    killed = backup(settings, crash_at="backup.parts_written")
    assert killed.returncode == -signal.SIGKILL
    leftovers = [p for p in settings.backup_dir.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].name.endswith(PARTIAL)
    assert (leftovers[0] / "memory" / "memory.db").is_file()  # every part was there, only the seal missing
    assert list_sets(settings.backup_dir) == []  # not a set: nothing can list, restore or prune it as one

    done = backup(settings)
    assert done.returncode == 0, done.stderr
    sealed = json.loads(done.stdout)["path"]
    assert verify_set(sealed)["parts"]["memory"]["tables"]["notes"] == 1
    assert [s["set"] for s in list_sets(settings.backup_dir)] == [os.path.basename(sealed)]
    assert clean_partials(settings.backup_dir, max_age_s=0) == [leftovers[0].name]  # an old leftover goes
    assert sorted(p.name for p in settings.backup_dir.iterdir()) == [os.path.basename(sealed)]

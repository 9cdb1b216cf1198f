"""The durability drill on a real phase-3 stack: writers under seeded kill -9 of memory, tools and rag
(also mid-optimize and mid-backup), then every acknowledged write found, nothing partial or duplicated;
and the tally really fails when an acknowledged write is gone."""

from __future__ import annotations

import json

import httpx
import pytest

from harness.faults import kills, tally
from harness.faults.durability import DurabilityDrill
from harness.faults.writers import ACKED, IN_DOUBT, REFUSED, classify
from suite.testing import auth


def test_kill_plans_are_checked_and_schedules_come_from_the_seed():
    assert kills.parse_plan("memory, rag@optimize,backup") == [("memory", "write"), ("rag", "optimize"),
                                                               ("backup", "backup")]
    with pytest.raises(ValueError, match="memory@optimize"):
        kills.parse_plan("memory@optimize")
    plan = kills.parse_plan("memory,tools,rag,rag@backup")
    a, b = kills.schedule(plan, 7, 40, 3), kills.schedule(plan, 7, 40, 3)
    assert a == b and a != kills.schedule(plan, 8, 40, 3)  # recorded seed → the same moments again
    assert [p.at_s for p in a] == sorted(p.at_s for p in a) and all(3 <= p.at_s <= 40 for p in a)
    assert sorted(p.label for p in a) == ["memory", "rag", "rag@backup", "tools"]


def test_a_write_is_acknowledged_only_on_its_success_status():
    req = httpx.Request("POST", "http://127.0.0.1:1/x")
    assert classify(None, httpx.Response(201, request=req), (201,))[0] == ACKED
    assert classify(None, httpx.Response(503, request=req), (201,))[0] == IN_DOUBT  # dying mid-write
    assert classify(None, httpx.Response(429, request=req), (201,))[0] == REFUSED
    assert classify(httpx.ConnectError("refused"), None, (201,))[0] == REFUSED  # nothing was sent
    assert classify(httpx.ReadError("cut"), None, (201,))[0] == IN_DOUBT  # sent, answer lost


@pytest.mark.integration
def test_the_drill_finds_every_acknowledged_write_and_fails_when_one_is_gone(phase3, tmp_path):
    drill = DurabilityDrill(phase3, tmp_path, plan="memory,tools,rag,rag@optimize,rag@backup,backup@backup",
                            seed=32, duration_s=40, say=print)
    results = {r.id: r for r in drill.run()}
    assert {k: r.status.value for k, r in results.items()} == dict.fromkeys(results, "pass"), \
        {k: (r.measured, r.detail) for k, r in results.items() if r.status.value != "pass"}
    assert set(results) == {"durability.kills", "durability.memory", "durability.rag", "durability.tools.audit",
                            "durability.tools.approvals", "durability.sqlite", "durability.edge", "durability.backup"}
    assert len(drill.kills) == 6 and all(k.pid for k in drill.kills)
    rows = {row["written"]: row for row in drill.summary()}
    assert rows["memory notes"]["acknowledged"] >= 20 and rows["rag documents"]["acknowledged"] >= 5
    assert all(row["lost"] == row["partial"] == row["duplicated"] == 0 for row in rows.values())
    evidence = json.loads(drill.evidence.read_text())
    assert evidence["seed"] == 32 and len(evidence["kills"]) == 6

    # the check can fail: an acknowledged note removed behind the drill's back is reported lost
    memory_writes = evidence["writes"]["memory/MemoryWriter"]
    victim = next(w for w in memory_writes if w["outcome"] == ACKED)
    httpx.delete(phase3.url("memory") + f"/v1/memory/notes/{victim['detail']['id']}", headers=auth(phase3, "admin"),
                 timeout=30).raise_for_status()
    writer = type("W", (), {"project": f"durability-{evidence['tag']}", "writes": [
        type("Write", (), w)() for w in memory_writes]})()
    recount = tally.memory_notes(phase3, writer, auth(phase3, "developer"))
    assert not recount.ok and len(recount.lost) == 1 and recount.found == rows["memory notes"]["found"] - 1

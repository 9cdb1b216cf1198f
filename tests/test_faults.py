"""The fault drill's bookkeeping, without a stack: who needs whom, which requests an outage touched,
and how a drill becomes a verdict."""

from __future__ import annotations

import pytest

from harness import faults
from harness.faults.records import Drill
from harness.faults.verdicts import judge
from harness.load.samples import Sample
from harness.result import Status


def test_who_needs_whom():
    assert faults.dependants("embedding", 3) == ["rag", "tools"]
    assert faults.dependants("inference-chat", 3) == ["gateway", "rag", "tools"]
    assert faults.dependants("memory", 2) == []
    chat = Sample("chat (fallback)", start=10.0, ms=500.0, ok=True)
    code = Sample("code", start=9.0, ms=5000.0, ok=False)
    rag = Sample("rag query", start=9.0, ms=5000.0, ok=False)
    later = Sample("chat", start=30.0, ms=100.0, ok=True)
    assert faults.affected([chat, code, rag, later], "inference-chat", 10.2, 20.0) == [chat]
    assert faults.affected([chat, code, rag, later], "gateway", 10.2, 20.0) == [chat, code]
    assert faults.affected([chat, code, rag, later], "embedding", 0.0, 9.5) == [rag]


def test_a_drill_becomes_a_typed_verdict(tmp_path):
    figure = tmp_path / "timeline.svg"
    chat = Drill("inference-chat", 1, pid=10, killed_at=100.0, ready_at=104.2, new_pid=11, outage_end=104.2)
    chat.samples = [Sample("chat (fallback)", 101.0, 900.0, True), Sample("chat", 103.0, 50.0, False, error="x")]
    r = judge(chat, {"restarts": 0}, {"restarts": 1, "last_exit": "signal 9 (SIGKILL)"}, faults.Thresholds(),
              tmp_path, figure)
    assert (r.status, r.value, r.unit) == (Status.FAIL, 4.2, "s")  # 1 of 2 failed: 50 % > 5 %
    assert "1/2 affected requests failed (50%), 1 served by the other model" in r.measured
    assert "client error ratio 50.0% > 5%" in r.detail and "dependants ready again" in r.detail
    lost = Drill("embedding", 2, pid=20, killed_at=100.0, outage_end=190.0, log_tail="Traceback: boom")
    r = judge(lost, {"restarts": 0}, {"restarts": 1}, faults.Thresholds(give_up_s=90), tmp_path, figure)
    assert r.status is Status.FAIL and r.value is None and r.measured.startswith("not restored")
    assert "the drill stopped here" in r.detail and (tmp_path / "embedding.log.txt").read_text().startswith("Traceback")
    assert r.evidence == [str(figure), str(tmp_path / "embedding.log.txt")]


def test_a_service_with_a_longer_cold_start_is_judged_by_its_own_budget(tmp_path):
    figure, after = tmp_path / "timeline.svg", {"restarts": 1, "last_exit": "signal 9 (SIGKILL)"}
    slow = Drill("embedding", 2, pid=20, killed_at=100.0, ready_at=136.1, new_pid=21, outage_end=136.1)
    th = faults.Thresholds(recovery_s=30, recovery_by_service=faults.parse_recovery("embedding:60"))
    r = judge(slow, {"restarts": 0}, after, th, tmp_path, figure)
    assert r.status is Status.PASS and "ready again ≤ 60 s" in r.target
    same = Drill("rag", 2, pid=30, killed_at=100.0, ready_at=136.1, new_pid=31, outage_end=136.1)
    r = judge(same, {"restarts": 0}, after, th, tmp_path, figure)  # everyone else keeps the general 30 s
    assert r.status is Status.FAIL and "recovery took 36.1 s" in r.detail and "≤ 30 s" in r.target
    assert faults.Thresholds().recovery_for("embedding") == 60 and faults.Thresholds().recovery_for("memory") == 30
    assert faults.parse_recovery(" embedding:45 , rag:20") == {"embedding": 45.0, "rag": 20.0}
    assert faults.parse_recovery("") == {}
    for bad in ("embedding", "embedding:soon", ":5", "rag:-1", "embedding=60"):
        with pytest.raises(ValueError, match="SERVICE:SECONDS"):
            faults.parse_recovery(bad)

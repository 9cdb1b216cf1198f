"""The durability drill: nothing a client was told succeeded is lost when a service is killed mid-write.

Writers (``writers``) keep adding memory notes, multi-chunk RAG documents (and shorter re-indexes of
them), audited tool calls and tool-server approvals, each keeping a ledger of what was acknowledged,
what is in doubt and what was refused. Meanwhile ``kills`` SIGKILLs each stateful service at moments
drawn from a seed — also while the edge store optimizes a collection in the background (copy,
optimizer, shard swap) and while ``suite backup create`` runs — and waits for it to come back. Then
``tally`` checks every ledger against the recovered stack through the services' own APIs, runs
``PRAGMA integrity_check`` on every SQLite database, opens and queries every edge collection, and
verifies every backup set made meanwhile. One ``CheckResult`` per service and per check: acknowledged /
found / lost / partial / duplicated, failing on anything but 0 lost, 0 partial, 0 duplicated.

The drill's own keys (a developer's and an admin's, minted for it and owned by the run, so revoked
with it) keep its tool calls inside the tool server's per-key budget whatever ran before.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.faults import tally
from harness.faults.drill import ready_again_at
from harness.faults.kills import STATEFUL, Kill, Killer, parse_plan, schedule
from harness.faults.writers import ApprovalWriter, AuditWriter, MemoryWriter, RagWriter, Writer
from harness.keys import bearer, make_key, run_keys
from harness.result import CheckResult, Stage, Status
from suite.fsio import write_json

DEFAULT_PLAN = "memory,tools,rag,rag@optimize,rag@backup,backup@backup"
QUICK_PLAN = "memory,rag"
WARMUP_S = 3.0  # writers run this long before the first kill (the drill's collection exists by then)
SETTLE_S = 2.0  # writes after the last recovery, and the approval poller's turn before the check
TARGET = "0 lost, 0 partial, 0 duplicated"


class DurabilityDrill:
    """``DurabilityDrill(settings, run_dir, ...).run()`` → results; ``summary`` and ``kills`` after."""

    def __init__(self, settings, run_dir: Path, plan: str = DEFAULT_PLAN, seed: int = 32, duration_s: float = 45.0,
                 pace_s: float = 0.3, give_up_s: float = 90.0, say: Callable[[str], None] = print) -> None:
        self.settings, self.run_dir = settings, Path(run_dir)
        self.plan = parse_plan(plan)
        self.seed, self.duration_s, self.pace_s, self.give_up_s, self.say = seed, duration_s, pace_s, give_up_s, say
        self.tag = f"{seed}-{int(time.time()) % 1_000_000}"
        self.kills: list[Kill] = []
        self.tallies: list[tally.Tally] = []
        self.evidence = self.run_dir / "faults" / "durability.json"

    def _headers(self) -> dict[str, dict[str, str]]:
        """The drill's own developer and admin keys (the run owns them: revoked when it ends)."""
        keys = run_keys(self.settings)
        ttl = self.settings.auth.run_key_ttl_s
        return {role: bearer(make_key(self.settings, role, f"durability drill {self.tag}", ttl, keys.run_id))
                for role in ("developer", "admin")}

    def run(self) -> list[CheckResult]:
        down = [n for n in STATEFUL if ready_again_at(self.settings, n, time.monotonic() + 10) is None]
        if down:
            raise RuntimeError(f"the durability drill needs {', '.join(STATEFUL)} ready (phase 3); not ready: "
                               f"{', '.join(down)} — run 01_bring_up or `suite up --phase 3`")
        headers = self._headers()
        writers: list[Writer] = [MemoryWriter(self.settings, self.tag, headers, self.pace_s),
                                 RagWriter(self.settings, self.tag, headers, self.pace_s * 3),
                                 AuditWriter(self.settings, self.tag, headers, self.pace_s * 8),
                                 ApprovalWriter(self.settings, self.tag, headers, self.pace_s * 8)]
        planned = schedule(self.plan, self.seed, self.duration_s - SETTLE_S, WARMUP_S)
        self.say(f"durability drill {self.tag}: seed {self.seed}, {len(planned)} kills in ~{self.duration_s:g} s: "
                 + ", ".join(f"{p.label} at {p.at_s:.1f} s" for p in planned))
        since = time.time()
        t0 = time.monotonic()
        for w in writers:
            w.start()
        killer = Killer(self.settings, headers["admin"], writers[1].collection, self.give_up_s, self.say)
        try:
            self.kills = killer.run(planned, t0)
            time.sleep(max(SETTLE_S, t0 + self.duration_s - time.monotonic()))
        finally:
            for w in writers:
                w.stop()
        for name in STATEFUL:
            ready_again_at(self.settings, name, time.monotonic() + self.give_up_s)
        time.sleep(SETTLE_S)  # approved calls the poller has not run yet get their turn
        self.say("writers stopped: " + "; ".join(f"{w.service} {type(w).__name__}: {w.counts()}" for w in writers))
        memory, rag, audit, approvals = writers
        self.tallies = [tally.memory_notes(self.settings, memory, headers["developer"]),
                        tally.rag_documents(self.settings, rag, headers["developer"]),
                        tally.audit_rows(self.settings, audit, headers["admin"], since),
                        tally.approvals(self.settings, approvals, headers["admin"], since)]
        integrity = tally.sqlite_integrity(self.settings)
        shards = tally.edge_shards(self.settings, headers["developer"])
        sets = tally.backup_sets(self.settings, since)
        self.evidence.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.evidence, {
            "tag": self.tag, "seed": self.seed, "plan": [p.__dict__ for p in planned],
            "kills": [{**k.__dict__, "planned": k.planned.__dict__} for k in self.kills],
            "tallies": [t.to_dict() for t in self.tallies], "sqlite": integrity, "edge": shards, "backups": sets,
            "writes": {f"{w.service}/{type(w).__name__}": [w_.__dict__ for w_ in w.writes] for w in writers},
            "writer_errors": {type(w).__name__: w.errors for w in writers if w.errors}}, default=str)
        return self._results(since, writers, integrity, shards, sets)

    # -- results --------------------------------------------------------------------------------
    def _results(self, since: float, writers: list[Writer], integrity: dict[str, str], shards: dict[str, str],
                 sets: dict[str, str]) -> list[CheckResult]:
        started = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        evidence = [str(self.evidence)]
        ids = {"memory notes": "memory", "rag documents": "rag", "audited tool calls": "tools.audit",
               "tool approvals": "tools.approvals"}
        out = [self._kills_result(started, evidence)]
        for t, w in zip(self.tallies, writers):
            problems = [*t.lost[:3], *t.partial[:3], *t.duplicated[:3], *w.errors[:2]]
            ok = t.ok and not w.errors and t.acknowledged > 0
            if t.acknowledged == 0:
                problems.append("nothing was acknowledged: the drill proved nothing for it")
            out.append(CheckResult(
                f"durability.{ids[t.name]}", f"Every acknowledged write survives kill -9: {t.name}",
                Stage.FAULT_DRILL, Status.PASS if ok else Status.FAIL, target=TARGET, measured=t.measured(),
                value=t.failures, unit="count", evidence=evidence, detail="; ".join([*problems, *t.notes])[:1500],
                started_at=started))
        bad = {k: v for k, v in integrity.items() if v != "ok"}
        out.append(CheckResult("durability.sqlite", "PRAGMA integrity_check on every SQLite database",
                               Stage.FAULT_DRILL, Status.FAIL if bad else Status.PASS, target="ok on each",
                               measured=", ".join(f"{k} {v}" for k, v in integrity.items()),
                               value=len(bad), unit="count", evidence=evidence, started_at=started))
        bad = {k: v for k, v in shards.items() if v != "ok"}
        out.append(CheckResult("durability.edge", "Every vector collection opens and answers after the kills",
                               Stage.FAULT_DRILL, Status.FAIL if bad or not shards else Status.PASS,
                               target="described and queried", value=len(bad), unit="count", evidence=evidence,
                               measured=f"{len(shards) - len(bad)}/{len(shards)} collections answer",
                               detail="; ".join(f"{k}: {v}" for k, v in bad.items()), started_at=started))
        bad = {k: v for k, v in sets.items() if v != "ok"}
        out.append(CheckResult("durability.backup", "No half backup set: every set verifies whole",
                               Stage.FAULT_DRILL, Status.FAIL if bad else Status.PASS,
                               target="every finished set verifies", value=len(bad), unit="count", evidence=evidence,
                               measured=f"{len(sets) - len(bad)} set(s) made during the drill verify, "
                                        f"{len(bad)} do not",
                               detail="; ".join(f"{k}: {v}" for k, v in bad.items()), started_at=started))
        return out

    def _kills_result(self, started: str, evidence: list[str]) -> CheckResult:
        problems = [f"{k.planned.label}: {'; '.join(k.problems)}" for k in self.kills if k.problems]
        missing = len(self.plan) - len(self.kills)
        if missing:
            problems.append(f"{missing} planned kill(s) not made (a service did not come back)")
        lines = [f"{k.planned.label} at {k.at_s:.1f} s (pid {k.pid})"
                 + (f", back in {k.ready_after_s:.1f} s" if k.ready_after_s is not None else "")
                 + (f" — {k.note}" if k.note else "") for k in self.kills]
        slowest = max((k.ready_after_s or 0.0 for k in self.kills), default=0.0)
        return CheckResult("durability.kills", "kill -9 of each stateful service mid-write (seeded moments)",
                           Stage.FAULT_DRILL, Status.FAIL if problems else Status.PASS,
                           target=f"each kill made, each service ready again ≤ {self.give_up_s:g} s",
                           measured=f"{len(self.kills)} kills (seed {self.seed}), slowest back in {slowest:.1f} s",
                           value=len(self.kills), unit="count", evidence=evidence,
                           detail="; ".join([*problems, *lines])[:1500], started_at=started)

    def summary(self) -> list[dict[str, Any]]:
        """The table the runbook shows: one row per service."""
        return [{"written": t.name, "acknowledged": t.acknowledged, "found": t.found, "lost": len(t.lost),
                 "partial": len(t.partial), "duplicated": len(t.duplicated), "in doubt": t.in_doubt,
                 "in doubt, there": t.in_doubt_found} for t in self.tallies]


def plan_for(profile_quick: bool, plan: str) -> str:
    """The kill plan a profile runs: quick kills memory and rag once each, unless a plan was named."""
    return QUICK_PLAN if profile_quick and plan == DEFAULT_PLAN else plan


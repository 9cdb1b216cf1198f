"""Memory smoke check (phase 3): a note saved in the memory API is found by full-text search."""

from __future__ import annotations

import uuid

from harness.result import CheckResult
from harness.smoke.http import Check, get, post_json, run_key
from suite import services
from suite.settings import Settings

PHASE = services.get("memory").phase  # the stack phase that starts the memory service


def check_roundtrip(settings: Settings, phase: int) -> CheckResult:
    def body(c: Check) -> CheckResult:
        token = f"smoketoken{uuid.uuid4().hex[:10]}"
        base = settings.url("memory")
        key = run_key(settings)
        saved = post_json(f"{base}/v1/memory/notes",
                          {"project": "smoke", "text": f"phase 3 smoke note {token}", "tags": ["smoke"]}, key)
        found = get(f"{base}/v1/memory/search", key, q=token, project="smoke")
        note_id = saved.json().get("id") if saved.status_code == 201 else None
        ids = [r["id"] for r in found.json().get("results", [])] if found.status_code == 200 else []
        return c.result(note_id is not None and note_id in ids,
                        detail=f"save HTTP {saved.status_code} (id {note_id}), search HTTP {found.status_code} "
                               f"({len(ids)} hits)")

    return Check("smoke.memory.roundtrip", "memory: save a note, find it by search", "note found",
                 PHASE).run(phase, body)

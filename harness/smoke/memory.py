"""Memory smoke check (phase 3): a note saved in the memory API is found by full-text search."""

from __future__ import annotations

import uuid

import httpx

from harness.result import CheckResult, Timer
from harness.smoke.http import failed, get, post_json, result, run_key, skip_below
from suite import services
from suite.settings import Settings

PHASE = services.get("memory").phase  # the stack phase that starts the memory service


def check_roundtrip(settings: Settings, phase: int) -> CheckResult:
    cid, title, target = "smoke.memory.roundtrip", "memory: save a note, find it by search", "note found"
    if skipped := skip_below(phase, PHASE, cid, title):
        return skipped
    t = Timer()
    token = f"smoketoken{uuid.uuid4().hex[:10]}"
    base = settings.url("memory")
    try:
        key = run_key(settings)
        saved = post_json(f"{base}/v1/memory/notes",
                          {"project": "smoke", "text": f"phase 3 smoke note {token}", "tags": ["smoke"]}, key)
        found = get(f"{base}/v1/memory/search", key, q=token, project="smoke")
    except httpx.HTTPError as exc:
        return failed(cid, title, t, exc, target)
    note_id = saved.json().get("id") if saved.status_code == 201 else None
    ids = [r["id"] for r in found.json().get("results", [])] if found.status_code == 200 else []
    return result(cid, title, note_id is not None and note_id in ids, t, target=target,
                  detail=f"save HTTP {saved.status_code} (id {note_id}), search HTTP {found.status_code} "
                         f"({len(ids)} hits)")

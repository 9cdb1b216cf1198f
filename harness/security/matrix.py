"""The RBAC matrix against the live stack: every route of every running service × {no key, guest,
developer, admin, revoked key, expired key}, with the status each must get.

The routes are not a hand-kept list: they are each service's own ``/openapi.json`` (read with the
admin key) joined with the policy table (``suite.auth.policy``, which also names the routes a schema
leaves out: ``/mcp``, the docs, llama_cpp.server's hidden one). Expected, for each cell:

* no key, a revoked key, an expired key → 401;
* a role the policy does not grant → 403;
* a role it grants → reaches the handler: anything but 401/403 (requests carry bodies a handler
  refuses — ids that do not exist, a missing field, a model path that is not there — so an allowed
  request changes nothing). Two admin routes have no such body (memory's ``admin/maintain`` and
  ``admin/backup`` would run); their allowed cells are recorded as not sent.

Any 2xx where the policy denies is a failure naming the route and the role. A route in
``/openapi.json`` that the policy table lacks fails the coverage line, and so does a service whose
schema cannot be read.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from harness.httpclient import client
from harness.keys import RunKeys, make_key
from harness.result import CheckResult, Stage, Status, Timer
from suite import services
from suite.auth import policy
from suite.auth.roles import has
from suite.fsio import write_json
from suite.settings import Settings

TIMEOUT = httpx.Timeout(60.0, connect=5.0)
SUBJECTS = ("no key", "guest", "developer", "admin", "revoked key", "expired key")
ROLE_SUBJECTS = ("guest", "developer", "admin")
DUMMY = {"note_id": "999999999", "approval_id": "apr_securitymatrix0", "name": "security-matrix-none"}
# bodies a handler refuses before it changes anything (each route's own validation)
BODIES: dict[str, Any] = {
    "/v1/completions": {"model": "chat", "prompt": {"not": "a prompt"}},
    "/v1/chat/completions": {"model": "chat", "messages": "not a list"},
    "/reload": {"model_path": "/nonexistent/security-matrix"},
    "/v1/memory/projects": {"name": "bad name!"},
    "/tools/{name}": {"path": "security-matrix/none"},
    "/mcp": {"jsonrpc": "2.0", "id": 1, "method": "ping"},
}
NOT_SENT = {("POST", "/v1/memory/admin/maintain"), ("POST", "/v1/memory/admin/backup")}


@dataclass
class Cell:
    service: str
    method: str
    route: str
    subject: str
    expected: str  # "401", "403" or "allowed"
    status: int | None = None
    ok: bool = True
    note: str = ""


@dataclass
class MatrixKeys:
    """The keys a matrix is run with: the run's three roles, one revoked and one expired key."""

    by_subject: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def make(cls, settings: Settings, run: RunKeys) -> MatrixKeys:
        revoked = make_key(settings, "admin", "security matrix (revoked)", 3600, run.run_id)
        expired = make_key(settings, "admin", "security matrix (expired)", 1, run.run_id)
        from harness import stack

        key_id = revoked.split("_")[2]
        proc = stack.run_suite(["keys", "revoke", key_id], settings, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"suite keys revoke {key_id} failed: {(proc.stderr or proc.stdout)[-300:]}")
        time.sleep(1.1)  # past the expired key's one second
        return cls({"no key": None, "guest": run.guest, "developer": run.developer, "admin": run.admin,
                    "revoked key": revoked, "expired key": expired})


def concrete(template: str) -> str:
    return re.sub(r"\{([^}:]+)(?::[^}]*)?\}", lambda m: DUMMY.get(m.group(1), "security-matrix-none"), template)


def schema_routes(base: str, admin_key: str) -> set[tuple[str, str]]:
    """(METHOD, path) of every operation in a service's /openapi.json."""
    resp = client().get(base + "/openapi.json", headers={"Authorization": f"Bearer {admin_key}"},
                        timeout=TIMEOUT)
    resp.raise_for_status()
    return {(m.upper(), p) for p, ops in resp.json().get("paths", {}).items() for m in ops
            if m.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE")}


def expected_for(service: str, method: str, route: str, subject: str) -> str:
    if subject not in ROLE_SUBJECTS:
        return "401"
    _, needed = policy.match(service, method, concrete(route))
    return "allowed" if needed and has(subject, needed) else "403"


def probe(base: str, service: str, method: str, route: str, subject: str, key: str | None) -> Cell:
    cell = Cell(service, method, route, subject, expected_for(service, method, route, subject))
    if cell.expected == "allowed" and (method, route) in NOT_SENT:
        cell.note = "allowed by the policy; not sent (it would run the job)"
        return cell
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    kw: dict[str, Any] = {}
    if method in ("POST", "PUT", "PATCH"):
        kw["json"] = BODIES.get(route, {})
        if route == "/mcp":
            headers["Accept"] = "application/json, text/event-stream"
    try:
        resp = client().request(method, base + concrete(route), headers=headers, timeout=TIMEOUT, **kw)
    except httpx.HTTPError as exc:
        cell.ok, cell.note = False, f"no answer: {type(exc).__name__}"
        return cell
    cell.status = resp.status_code
    if cell.expected == "allowed":
        cell.ok = resp.status_code not in (401, 403)
        if not cell.ok:
            cell.note = _message(resp)
    else:
        cell.ok = resp.status_code == int(cell.expected)
        if 200 <= resp.status_code < 300:
            cell.note = "UNEXPECTED 2xx"
        elif not cell.ok:
            cell.note = _message(resp)
    return cell


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return resp.text[:200]


def service_matrix(settings: Settings, service: str, keys: MatrixKeys) -> tuple[list[Cell], set, set]:
    """Every cell of one service; also (routes of its schema, routes probed)."""
    base = settings.url(service)
    served = schema_routes(base, keys.by_subject["admin"])
    table = {(m, p) for m, p in policy.table_of(service)}
    routes = sorted({(m, p) for m, p in served} | {(("POST" if m == "*" else m), p) for m, p in table})
    cells = [probe(base, service, m, p, s, keys.by_subject[s]) for m, p in routes for s in SUBJECTS]
    return cells, served, set(routes)


def check_matrix(settings: Settings, service: str, keys: MatrixKeys) -> tuple[list[CheckResult], list[Cell]]:
    """Two results for one service: coverage (every schema route is in the policy table) and the matrix."""
    t = Timer()
    try:
        cells, served, probed = service_matrix(settings, service, keys)
        t.stop()
    except (httpx.HTTPError, ValueError) as exc:
        failed = CheckResult(f"security.rbac.{service}", f"{service}: RBAC matrix", Stage.SECURITY, Status.FAIL,
                             target="every route × every subject as the policy says",
                             detail=f"cannot read {service}'s /openapi.json: {type(exc).__name__}: {exc}",
                             **t.fields())
        return [failed], []
    table = policy.table_of(service)
    missing = sorted(f"{m} {p}" for m, p in served if (m, p) not in table and ("*", p) not in table)
    coverage = CheckResult(
        f"security.rbac.{service}.coverage", f"{service}: every /openapi.json route has a policy line",
        Stage.SECURITY, Status.FAIL if missing else Status.PASS, target="0 routes without a policy line",
        measured=f"{len(served)} schema routes, {len(probed)} probed",
        detail=("without a policy line (refused to every role; add them to suite/auth/policy.py): "
                + ", ".join(missing)) if missing else "every schema route is in the policy table",
        started_at=t.started_at)  # the time is the matrix line's
    bad = [c for c in cells if not c.ok]
    leaks = [c for c in bad if c.note == "UNEXPECTED 2xx"]
    detail = "; ".join(f"{c.method} {c.route} as {c.subject}: expected {c.expected}, got {c.status}"
                       + (f" ({c.note})" if c.note else "") for c in bad[:20])
    matrix = CheckResult(
        f"security.rbac.{service}", f"{service}: RBAC matrix ({len(probed)} routes × {len(SUBJECTS)} subjects)",
        Stage.SECURITY, Status.FAIL if bad else Status.PASS,
        target="401 without a valid key, 403 outside the role, no 2xx where denied",
        measured=f"{len(leaks)} unexpected 2xx, {len(bad)} wrong of {len(cells)}",
        detail=detail or f"{len(cells)} cells as the policy says", **t.fields())
    return [coverage, matrix], cells


def run_matrix(settings: Settings, phase: int, keys: MatrixKeys,
               names: list[str] | None = None) -> tuple[list[CheckResult], list[dict]]:
    """Every service of the phase (or ``names``); the results and every cell (for the evidence file)."""
    results: list[CheckResult] = []
    cells: list[Cell] = []
    for name in names or [spec.name for spec in services.for_phase(phase)]:
        res, c = check_matrix(settings, name, keys)
        results += res
        cells += c
    return results, [asdict(c) for c in cells]


def write_evidence(path, cells: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return str(write_json(path, cells, indent=1))

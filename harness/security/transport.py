"""Host-header and cross-origin probes against each running service, as a web page in the user's
browser would send them (no key: these must be refused before any key matters).

Per service: a DNS-rebinding ``Host`` (400), the same on a state-changing route, a cross-origin POST
with a foreign ``Origin`` (403), a form post and a bodyless POST (400 — the "simple" requests a browser
sends cross-origin without asking), and a loopback ``Host`` still answered (the check is not just
refusing everything).
"""

from __future__ import annotations

import httpx

from harness.httpclient import client
from harness.result import CheckResult, Stage, Status, Timer
from suite import services
from suite.auth import policy
from suite.settings import Settings

TIMEOUT = httpx.Timeout(30.0, connect=5.0)
EVIL = "evil.example"


def state_changing_route(service: str) -> str:
    """A POST route of the service's policy table (concrete), for the cross-origin probes."""
    posts = sorted(p for m, p in policy.table_of(service) if m in ("POST", "*") and "{" not in p)
    return posts[0] if posts else "/"


def probes(settings: Settings, service: str) -> list[tuple[str, int, int | None]]:
    """(probe, expected status, got) for one service."""
    base = settings.url(service)
    port = settings.port(service)
    route = state_changing_route(service)
    cases = [
        ("GET /health with Host: evil.example (DNS rebinding)", 400,
         lambda: client().get(base + "/health", headers={"Host": f"{EVIL}:{port}"}, timeout=TIMEOUT)),
        (f"POST {route} with Host: evil.example", 400,
         lambda: client().post(base + route, json={}, headers={"Host": EVIL}, timeout=TIMEOUT)),
        (f"POST {route} from Origin http://evil.example", 403,
         lambda: client().post(base + route, json={}, headers={"Origin": f"http://{EVIL}"}, timeout=TIMEOUT)),
        (f"form POST {route}", 400,
         lambda: client().post(base + route, data={"a": "b"}, timeout=TIMEOUT)),
        (f"bodyless POST {route}", 400,
         lambda: client().post(base + route, timeout=TIMEOUT)),
        ("GET /health with Host: localhost (still answered)", 200,
         lambda: client().get(base + "/health", headers={"Host": f"localhost:{port}"}, timeout=TIMEOUT)),
    ]
    out = []
    for name, expected, send in cases:
        try:
            got: int | None = send().status_code
        except httpx.HTTPError:
            got = None
        out.append((name, expected, got))
    return out


def check_transport(settings: Settings, service: str) -> CheckResult:
    t = Timer()
    rows = probes(settings, service)
    wrong = [(n, e, g) for n, e, g in rows if g != e]
    return CheckResult(
        f"security.transport.{service}", f"{service}: Host and cross-origin probes", Stage.SECURITY,
        Status.FAIL if wrong else Status.PASS, target="rebinding Host 400, foreign Origin 403, non-JSON POST 400",
        measured=f"{len(rows) - len(wrong)}/{len(rows)} as expected",
        detail="; ".join(f"{n}: expected {e}, got {g}" for n, e, g in (wrong or rows)), **t.fields())


def run_transport(settings: Settings, phase: int, names: list[str] | None = None) -> list[CheckResult]:
    return [check_transport(settings, name) for name in names or [s.name for s in services.for_phase(phase)]]

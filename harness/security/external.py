"""The security review of a target from outside: what anyone who can reach a part can do to it.

Four lines per part (``security.external.<part>.*``):

* ``auth`` — unauthenticated access refused on every route the part documents (its kind's routes,
  plus its ``/openapi.json`` where it serves one), each sent with no key and with a wrong key:
  401/403 is refused, 404/405 not served, anything else reached the handler. Routes public by the
  software's design (probes) are listed, not judged. A part the target gives no key is probed the
  same way: if its routes answer, it is an unauthenticated part, and the line says so. An MCP part
  is probed with an MCP handshake without a key. Read-only targets get GETs, and POSTs only to the
  inference routes a bodiless JSON cannot change anything through.
* ``browser`` — what a web page in the user's browser could do: a foreign ``Origin`` allowed by CORS
  (``*`` or echoed) and a DNS-rebinding ``Host`` answered. On an open part either one fails (any page
  can call it); on a part that needs a key it is a warning.
* ``tls`` — on ``https``: the certificate verifies and is not expiring within ``TLS_WARN_DAYS``; plain
  HTTP to a host beyond loopback with a key fails (the key travels in clear text).
* ``exposure`` — ``/metrics`` and ``/slots`` exposing prompts: a canary prompt is sent through the
  part, then its ``/slots``, ``/metrics`` and ``metrics_url`` are read without a key and with it; the
  canary readable without a key fails, readable by every key holder warns.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from harness.result import CheckResult, Stage, Status, Timer
from harness.target import Part, Target, TargetError, headers

TIMEOUT = httpx.Timeout(20.0, connect=5.0)
EVIL = "evil.example"
TLS_WARN_DAYS = 14
MAX_ROUTES = 300
REFUSED = (401, 403)
NOT_SERVED = (404, 405, 501)
# POSTs a read-only probe sends: inference routes, where an empty JSON body is invalid on its own
SAFE_POSTS = {"/v1/chat/completions", "/v1/completions", "/completion", "/v1/embeddings", "/embedding", "/embed",
              "/embeddings", "/tokenize", "/detokenize", "/infill", "/apply-template", "/chat/completions",
              "/completions"}


def _check(part: Part, line: str, title: str, status: Status, goal: str, measured: str, detail: str,
           t: Timer) -> CheckResult:
    return CheckResult(f"security.external.{part.name}.{line}", f"{part.name}: {title}", Stage.SECURITY, status,
                       target=goal, measured=measured, detail=detail, **t.fields())


AUTH_WORDS = re.compile(r"auth|api[ _-]?key|token|unauthori|credential|permission|forbidden|no connected db",
                        re.IGNORECASE)


def classify(status: int | None, body: str) -> str:
    """``refused`` (401/403, or an error that says it is about the key), ``unserved`` (no such route,
    no answer), ``errored`` (a 5xx that says nothing: no data, but no clean refusal either) or
    ``answered`` (2xx/3xx, or a 4xx from the handler itself: it was reached)."""
    if status in REFUSED:
        return "refused"
    if status is None or status in NOT_SERVED:
        return "unserved"
    if status >= 400 and AUTH_WORDS.search(body[:500]):
        return "refused"
    return "errored" if status >= 500 else "answered"


def _request(method: str, url: str, hdrs: dict[str, str] | None = None, **kw: Any) -> tuple[int | None, str]:
    try:
        r = httpx.request(method, url, headers=hdrs, timeout=TIMEOUT, **kw)
    except httpx.HTTPError:
        return None, ""
    return r.status_code, r.text


def documented_routes(target: Target, part: Part) -> list[tuple[str, str]]:
    """(METHOD, path) the part documents: its kind's table, and its ``/openapi.json`` when served
    (path parameters filled with a name that exists nowhere)."""
    routes = set(part.defaults.routes)
    if part.defaults.openapi:
        try:
            auth = headers(target, part, "admin")
        except (TargetError, RuntimeError, OSError):
            auth = {}
        try:
            r = httpx.get(part.url("/openapi.json"), headers=auth, timeout=TIMEOUT)
            paths = r.json().get("paths", {}) if r.status_code == 200 else {}
        except (httpx.HTTPError, ValueError, AttributeError):
            paths = {}
        for path, ops in paths.items():
            for method in ops:
                if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                    routes.add((method.upper(), re.sub(r"\{[^}]+\}", "security-probe-none", path)))
    safe = part.allow_write
    routes = {(m, p) for m, p in routes if m == "GET" or (m == "POST" and (safe or p in SAFE_POSTS))}
    return sorted(routes)[:MAX_ROUTES]


def check_auth(target: Target, part: Part) -> CheckResult:
    t = Timer()
    goal = "401/403 without a key and with a wrong key on every documented route"
    if part.kind == "mcp":
        return _mcp_auth(target, part, t, goal)
    public = set(part.defaults.public) | {p for p in (part.health, part.ready) if p}
    open_routes, errored, refused, unserved, odd = [], [], 0, 0, set()
    wrong = {part.auth.header: f"{part.auth.scheme} wrong-{uuid.uuid4().hex[:8]}".strip()} if part.auth else \
        {"Authorization": f"Bearer wrong-{uuid.uuid4().hex[:8]}"}
    routes = [(m, p) for m, p in documented_routes(target, part) if p not in public]
    for method, path in routes:
        kw = {"json": {}} if method == "POST" else {}
        for who, hdrs in (("no key", {}), ("wrong key", wrong)):
            status, body = _request(method, part.url(path), hdrs, **kw)
            seen = classify(status, body)
            if seen == "refused":
                refused += 1
                if status not in REFUSED:
                    odd.add(f"{method} {path} refuses {who} with HTTP {status}, not 401")
            elif seen == "unserved":
                unserved += 1
            elif seen == "errored":
                errored.append(f"{method} {path} with {who}: HTTP {status}")
            else:
                open_routes.append(f"{method} {path} with {who}: HTTP {status} {body[:60]!r}")
    measured = (f"{len(open_routes)} answered, {refused} refused, {len(errored)} errored, {unserved} not served "
                f"of {2 * len(routes)}")
    if part.auth is None and open_routes:
        return _check(part, "auth", "unauthenticated access refused", Status.FAIL, goal, measured,
                      f"unauthenticated part: {part.name} ({part.defaults.label or part.kind}) takes no key, and "
                      f"anyone who reaches {part.host}:{part.port} can call it: " + "; ".join(open_routes[:12]), t)
    if open_routes:
        return _check(part, "auth", "unauthenticated access refused", Status.FAIL, goal, measured,
                      "answered without a valid key: " + "; ".join(open_routes[:12]), t)
    if errored:
        return _check(part, "auth", "unauthenticated access refused", Status.WARN, goal, measured,
                      "no data, but no refusal either: an error where a 401 belongs (its auth layer failed): "
                      + "; ".join(errored[:10]), t)
    if not routes or refused == 0:
        return _check(part, "auth", "unauthenticated access refused", Status.WARN, goal, measured,
                      f"no documented route of {part.kind} answered at all here: nothing to judge", t)
    detail = f"every documented route refused without a valid key; public by design: {', '.join(sorted(public))}"
    if odd:
        detail += "; " + "; ".join(sorted(odd)[:6])
    return _check(part, "auth", "unauthenticated access refused", Status.PASS, goal, measured, detail, t)


def _mcp_auth(target: Target, part: Part, t: Timer, goal: str) -> CheckResult:
    from harness.target.probe import mcp_tools

    try:
        names, info = mcp_tools(part.url(part.mcp_path), {})
    except Exception:  # refused (or broken): the handshake needs a key
        return _check(part, "auth", "unauthenticated access refused", Status.PASS, "MCP handshake without a key refused",
                      "refused", "an MCP client without a key cannot open a session", t)
    what = "unauthenticated part" if part.auth is None else "its key is not required"
    return _check(part, "auth", "unauthenticated access refused", Status.FAIL, "MCP handshake without a key refused",
                  f"open: {len(names)} tools", f"{what}: an MCP client without a key opened a session with {info} at "
                  f"{part.url(part.mcp_path)} and listed {len(names)} tools ({', '.join(names[:8])}): anyone who "
                  f"reaches {part.host}:{part.port} can call them", t)


def check_browser(target: Target, part: Part, open_part: bool) -> CheckResult:
    """CORS for a foreign Origin, and a DNS-rebinding Host (see the module docstring)."""
    t = Timer()
    path = part.mcp_path if part.kind == "mcp" else part.health or "/"
    findings = []
    try:
        pre = httpx.request("OPTIONS", part.url(path), timeout=TIMEOUT, headers={
            "Origin": f"http://{EVIL}", "Access-Control-Request-Method": "POST"})
        got = httpx.get(part.url(path), timeout=TIMEOUT, headers={"Origin": f"http://{EVIL}"})
        allowed = {r.headers.get("access-control-allow-origin", "") for r in (pre, got)}
        if "*" in allowed or f"http://{EVIL}" in allowed:
            findings.append(f"CORS allows any origin (Access-Control-Allow-Origin: {' / '.join(sorted(allowed - {''}))})")
        host = httpx.get(part.url(path), timeout=TIMEOUT, headers={"Host": EVIL})
        if host.status_code < 400 and part.loopback:
            findings.append(f"a request with Host: {EVIL} (DNS rebinding) is answered HTTP {host.status_code}")
    except httpx.HTTPError as exc:
        return _check(part, "browser", "CORS and Host", Status.FAIL, "foreign Origin and Host refused", "no answer",
                      f"{type(exc).__name__}: {exc}", t)
    goal = "no foreign Origin allowed; a DNS-rebinding Host refused (loopback parts)"
    if not findings:
        return _check(part, "browser", "CORS and Host", Status.PASS, goal, "refused", "a web page cannot reach it", t)
    if open_part:
        return _check(part, "browser", "CORS and Host", Status.FAIL, goal, f"{len(findings)} finding(s)",
                      "; ".join(findings) + f": {part.name} takes no key, so any web page the user opens can "
                      "call it", t)
    return _check(part, "browser", "CORS and Host", Status.WARN, goal, f"{len(findings)} finding(s)",
                  "; ".join(findings) + ": a page still needs the key, which it should not have", t)


def check_tls(part: Part) -> CheckResult:
    t = Timer()
    goal = f"https with a certificate that verifies and has > {TLS_WARN_DAYS} days left"
    if not part.https:
        if part.loopback:
            return _check(part, "tls", "TLS", Status.SKIP, goal, "not applicable",
                          "not applicable: plain HTTP on loopback never leaves the machine", t)
        status = Status.FAIL if part.auth else Status.WARN
        return _check(part, "tls", "TLS", status, goal, "plain HTTP",
                      f"{part.base_url} is plain HTTP to {part.host}, beyond loopback: "
                      + ("its key travels in clear text" if part.auth else "its traffic can be read on the way"), t)
    try:
        ctx = ssl.create_default_context()
        with socket.create_connection((part.host, part.port), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=part.host) as tls:
            cert = tls.getpeercert()
    except (ssl.SSLError, OSError) as exc:
        return _check(part, "tls", "TLS", Status.FAIL, goal, "does not verify", f"{type(exc).__name__}: {exc}", t)
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), UTC)
    days = (expires - datetime.now(UTC)).total_seconds() / 86400
    status = Status.FAIL if days <= 0 else Status.WARN if days <= TLS_WARN_DAYS else Status.PASS
    return CheckResult(f"security.external.{part.name}.tls", f"{part.name}: TLS", Stage.SECURITY, status, target=goal,
                       value=round(days, 1), unit="days", measured=f"{days:.0f} days left",
                       detail=f"certificate verifies; expires {expires.isoformat()}", **t.fields())


def check_exposure(target: Target, part: Part) -> CheckResult:
    """A canary prompt sent through an inference server or gateway, then looked for in what its
    ``/slots`` and metrics pages show without a key and with one."""
    t = Timer()
    goal = "no prompt text in /slots or /metrics without a key"
    canary = f"canary{uuid.uuid4().hex[:12]}"
    model = (getattr(part, "chat_model", None) or (part.models or [""])[0])
    try:
        auth = headers(target, part, "guest")
    except (TargetError, RuntimeError, OSError) as exc:
        return _check(part, "exposure", "prompts in /slots or /metrics", Status.FAIL, goal, "no key", str(exc), t)
    try:
        httpx.post(part.url("/v1/chat/completions"), headers=auth, timeout=httpx.Timeout(120.0, connect=5.0), json={
            "model": model, "max_tokens": 4, "temperature": 0,
            "messages": [{"role": "user", "content": f"Repeat the word {canary}."}]})
    except httpx.HTTPError as exc:
        return _check(part, "exposure", "prompts in /slots or /metrics", Status.FAIL, goal, "no answer",
                      f"the canary prompt was not accepted: {type(exc).__name__}: {exc}", t)
    pages = dict.fromkeys([part.url("/slots"), part.url("/metrics"), *([part.metrics_url] if part.metrics_url else [])])
    without, with_key, readable = [], [], []
    for url in pages:
        for who, hdrs in (("no key", {}), ("key", auth)):
            try:
                r = httpx.get(url, headers=hdrs, timeout=TIMEOUT)
            except httpx.HTTPError:
                continue
            if r.status_code != 200:
                continue
            readable.append(f"{url} ({who})")
            if canary in r.text:
                (without if who == "no key" else with_key).append(url)
    measured = f"{len(set(without))} page(s) without a key, {len(set(with_key))} with one"
    if without:
        return _check(part, "exposure", "prompts in /slots or /metrics", Status.FAIL, goal, measured,
                      f"the canary prompt is readable without a key at {', '.join(sorted(set(without)))}: every "
                      "prompt sent to it is (llama-server: --no-slots, or --api-key)", t)
    if with_key:
        return _check(part, "exposure", "prompts in /slots or /metrics", Status.WARN, goal, measured,
                      f"the canary prompt is readable by every key holder at {', '.join(sorted(set(with_key)))}", t)
    return _check(part, "exposure", "prompts in /slots or /metrics", Status.PASS, goal, measured,
                  "canary not found in " + (", ".join(readable) or "any page (none readable)"), t)


def review_target(target: Target) -> list[CheckResult]:
    """Every external line for every part. Our own suite's routes are the RBAC matrix's (read from
    its policy table): its ``auth`` line is left to it."""
    out: list[CheckResult] = []
    for part in target.parts():
        if target.ours and part.kind == "suite":
            out.append(_check(part, "auth", "unauthenticated access refused", Status.SKIP, "see the RBAC matrix",
                              "covered", "the suite's own routes are probed by the RBAC matrix (security.rbac.*)", Timer()))
            open_part = False
        else:
            line = check_auth(target, part)
            out.append(line)
            open_part = line.status is Status.FAIL and part.auth is None
        out.append(check_browser(target, part, open_part))
        out.append(check_tls(part))
        if target.role_of(part) in ("inference", "gateway") and part.kind != "mcp":
            out.append(check_exposure(target, part))
        time.sleep(0)  # one part at a time: nothing here is load
    return out

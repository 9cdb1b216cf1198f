"""The suite's trust boundary without models: keys (expiry, runs, revocation noticed within the cache
bound), the policy table against every service's real route table, the auth layer and transport
checks on real apps (memory, tools, gateway, rag) with keys of each role, and key forwarding
(no confused deputy). Issue 9's attacks on memory and RAG ports are here as tests."""

from __future__ import annotations

import asyncio
import os
import stat
import time

import httpx
import pytest
from fastapi import FastAPI, Request

from suite import services
from suite.auth import policy, startup
from suite.auth.keys import KeyCache, KeyStore, parse_ttl
from suite.auth.roles import ROLES
from suite.instrument import instrument
from suite.settings import Settings
from suite.testing import ServerThread, auth, serve, stack_keys, stack_settings


# -- keys -----------------------------------------------------------------------------------------
class Clock:
    """The keys module's clock, moved by the test: expiry and the cache bound judged exactly, however
    slow the box (a real sleep past a 0.3 s bound races a loaded CI machine)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    from suite.auth import keys as keys_module

    c = Clock()
    monkeypatch.setattr(keys_module, "time", c)
    return c


@pytest.fixture
def store(tmp_path):
    s = KeyStore.open(tmp_path / "auth" / "keys.db")
    yield s
    s.close()


def test_keys_expire_belong_to_runs_and_say_why_they_fail(store, clock):
    _, key = store.create("guest", "short", ttl_s=0.2)
    clock.now += 0.1
    assert store.check(key).principal.role == "guest"
    clock.now += 0.15
    assert store.check(key).principal is None and "expired" in store.check(key).reason
    run = [store.create(role, "run", 3600, run_id="run-1") for role in ("admin", "guest")]
    other, other_key = store.create("guest", "other run", 3600, run_id="run-2")
    assert store.revoke_run("run-1") == 2
    assert all("revoked" in store.check(k).reason for _, k in run)
    assert store.verify(other_key) == other and store.is_active(other.key_id)
    assert store.check("sk_suite_000000000000_" + "A" * 43).reason == "invalid API key"
    assert "missing" in store.check(None).reason
    states = {r["id"]: r["state"] for r in store.list()}
    assert sorted(states.values()) == ["active", "expired", "revoked", "revoked"]
    assert [parse_ttl(t) for t in ("90s", "30m", "12h", "7d", "5")] == [90, 1800, 43200, 604800, 5]
    for bad in ("", "0", "-5m", "3w", "1.5.2h"):
        with pytest.raises(ValueError):
            parse_ttl(bad)


def test_key_store_is_private(store, tmp_path):
    store.create("admin")
    folder = tmp_path / "auth"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in os.listdir(folder):  # keys.db and its -wal / -shm
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


def test_revocation_is_noticed_within_the_cache_bound(store, clock):
    cache = KeyCache(store, ttl_s=0.3)
    principal, key = store.create("developer")
    assert cache.check(key).principal == principal
    store.revoke(principal.key_id)
    clock.now += 0.2
    assert cache.check(key).principal == principal  # still trusted: inside the bound
    clock.now += 0.15
    assert cache.check(key).principal is None  # the bound is the promise
    short, short_key = store.create("guest", ttl_s=0.1)
    cache.check(short_key)
    clock.now += 0.15
    assert cache.check(short_key).principal is None  # an expiry is exact, cache or not


# -- the policy table against the services' own route tables -------------------------------------
def app_routes(app) -> set[tuple[str, str]]:
    """What an app serves: every operation of its OpenAPI schema, plus its own top-level routes that
    the schema leaves out (probes, docs, MCP)."""
    out = {(method.upper(), path) for path, ops in app.openapi().get("paths", {}).items() for method in ops}
    for route in app.router.routes:
        if getattr(route, "path", None) is not None:
            for method in (getattr(route, "methods", None) or {"*"}) - {"HEAD"}:
                out.add((method, route.path))
    return out


def service_apps(settings: Settings):
    """Every service's app as built (no lifespan: no model is loaded); the inference services also
    get llama_cpp.server's routes (the serial engine serves them)."""
    from llama_cpp.server.app import router as llama_router

    llama = {(m, r.path) for r in llama_router.routes for m in r.methods}
    for spec in services.SERVICES:
        routes = app_routes(spec.load_factory()(settings, **spec.kwargs))
        yield spec.name, routes | (llama if spec.name.startswith("inference") else set())


def test_every_route_of_every_service_is_in_the_policy_table_and_nothing_else(tmp_path):
    settings = Settings(data_dir=tmp_path)
    for name, routes in service_apps(settings):
        served = {(m, p) for m, p in routes if p not in policy.OPEN}
        table = set(policy.table_of(name))
        missing = {r for r in served if r not in table and ("*", r[1]) not in table}
        assert not missing, f"{name}: routes without a policy line: {missing}"
        stale = {r for r in table if r[0] != "*" and r not in served}
        assert not stale, f"{name}: policy lines for routes it does not serve: {stale}"
        for method, path in table:
            assert policy.permission_for(name, method if method != "*" else "POST", path) is not None


def test_roles_are_nested_and_admin_only_things_are_admin_only():
    assert ROLES["guest"] < ROLES["developer"] < ROLES["admin"]
    for permission in ("reload", "maintain", "backup", "approvals:decide", "audit:read", "memory:delete",
                       "memory:retention", "tools:destructive"):
        assert permission in ROLES["admin"] and permission not in ROLES["developer"]
    assert {"index", "write", "tools:destructive:request"} <= ROLES["developer"] - ROLES["guest"]
    assert {"infer", "embed", "query", "search", "read"} <= ROLES["guest"]


# -- the layer on real apps -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    settings = stack_settings(tmp_path_factory.mktemp("auth"), memory={"maintainer_enabled": False},
                              auth={"cache_s": 0.2, "unauthenticated_per_minute": 1000},
                              tools={"approval_poll_s": 0.2})
    with serve(settings, "memory", "tools", "rag"):
        yield settings


def req(settings, method, service, path, role=None, key=None, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if role:
        headers.update(auth(settings, role))
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(method, settings.url(service) + path, headers=headers, timeout=60, **kw)


@pytest.mark.integration
def test_issue_9_unauthenticated_state_changes_on_every_port_are_refused(stack):
    note = {"project": "p", "text": "planted"}
    attempts = [("POST", "memory", "/v1/memory/notes", note), ("POST", "rag", "/index", {"documents": []}),
                ("POST", "memory", "/v1/memory/projects", {"name": "p", "retention_days": 0.0001}),
                ("POST", "memory", "/v1/memory/admin/maintain", {}), ("POST", "memory", "/v1/memory/admin/backup", {}),
                ("DELETE", "memory", "/v1/memory/notes/1", None), ("POST", "tools", "/tools/write_file", {}),
                ("GET", "tools", "/audit", None), ("GET", "memory", "/v1/memory/notes", None),
                ("GET", "rag", "/collections", None), ("GET", "memory", "/openapi.json", None),
                ("GET", "tools", "/docs", None)]
    for method, service, path, body in attempts:
        for key in (None, "sk_suite_000000000000_" + "A" * 43, "not-a-key"):
            r = req(stack, method, service, path, key=key, json=body)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.json()["error"]["message"] and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(stack.url("memory") + "/health").status_code == 200
    assert httpx.get(stack.url("memory") + "/metrics").status_code == 200
    assert req(stack, "GET", "memory", "/v1/memory/notes", role="admin").json()["notes"] == []


def test_roles_on_memory(stack):
    assert req(stack, "POST", "memory", "/v1/memory/notes", role="guest", json={"text": "x"}).status_code == 403
    saved = req(stack, "POST", "memory", "/v1/memory/notes", role="developer", json={"project": "r", "text": "kept"})
    assert saved.status_code == 201
    assert req(stack, "GET", "memory", "/v1/memory/search", role="guest", params={"q": "kept"}).status_code == 200
    # a developer may create a project, not shorten its retention (that deletes its notes)
    assert req(stack, "POST", "memory", "/v1/memory/projects", role="developer", json={"name": "r2"}).status_code == 201
    r = req(stack, "POST", "memory", "/v1/memory/projects", role="developer",
            json={"name": "r", "retention_days": 0.0001})
    assert r.status_code == 403 and "memory:retention" in r.json()["error"]["message"]
    for path in ("/v1/memory/admin/maintain", "/v1/memory/admin/backup"):
        for role in ("guest", "developer"):
            assert req(stack, "POST", "memory", path, role=role, json={}).status_code == 403
        assert req(stack, "POST", "memory", path, role="admin", json={}).status_code == 200
    note_id = saved.json()["id"]
    assert req(stack, "DELETE", "memory", f"/v1/memory/notes/{note_id}", role="developer").status_code == 403
    assert req(stack, "DELETE", "memory", f"/v1/memory/notes/{note_id}", role="admin").status_code == 200
    r = req(stack, "POST", "memory", "/v1/memory/admin/nope", role="admin", json={})
    assert r.status_code in (403, 404)


def test_roles_on_tools_routes(stack):
    assert req(stack, "GET", "tools", "/audit", role="developer").status_code == 403
    assert req(stack, "GET", "tools", "/audit", role="admin").status_code == 200
    assert req(stack, "POST", "tools", "/approvals/apr_x/approve", role="developer", json={}).status_code == 403
    listed = req(stack, "GET", "tools", "/tools", role="guest").json()
    assert listed["role"] == "guest" and all(t["annotations"]["readOnlyHint"] for t in listed["tools"])


def test_revoked_and_expired_keys_stop_working(stack):
    keys = KeyStore.open(stack.key_store_path)
    try:
        principal, key = keys.create("admin", "to revoke", 3600)
        _, short = keys.create("admin", "short", 0.5)
    finally:
        keys.close()
    assert req(stack, "GET", "memory", "/v1/memory/notes", key=key).status_code == 200
    keys = KeyStore.open(stack.key_store_path)
    keys.revoke(principal.key_id)
    keys.close()
    time.sleep(stack.auth.cache_s + 0.6)
    r = req(stack, "GET", "memory", "/v1/memory/notes", key=key)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    r = req(stack, "GET", "tools", "/tools", key=short)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]


def test_openai_style_bearer_and_mcp_client_work_with_a_key(stack):
    from harness.mcp_client import mcp_session

    async def go():
        async with mcp_session(stack.url("tools") + "/mcp", auth(stack, "guest")) as session:
            return await session.list_tools()

    assert asyncio.run(go()).tools


# -- transport ------------------------------------------------------------------------------------
def test_host_origin_and_content_type(stack):
    admin = auth(stack, "admin")
    for service in ("memory", "tools", "rag"):
        url = stack.url(service)
        r = httpx.get(url + "/health", headers={"Host": "evil.example"})  # DNS rebinding
        assert r.status_code == 400 and "allowed_hosts" in r.json()["error"]["message"]
        r = httpx.post(url + "/v1/memory/notes", json={"text": "x"}, headers={**admin, "Host": "evil.example:80"})
        assert r.status_code == 400
        assert httpx.get(url + "/health", headers={"Host": f"localhost:{stack.port(service)}"}).status_code == 200
    base = stack.url("memory")
    r = httpx.post(base + "/v1/memory/admin/maintain", headers={**admin, "Origin": "http://evil.example"}, json={})
    assert r.status_code == 403 and r.json()["error"]["code"] == "origin_not_allowed"
    r = httpx.post(base + "/v1/memory/admin/maintain", headers=admin)  # bodyless POST
    assert r.status_code == 400 and r.json()["error"]["code"] == "json_body_required"
    r = httpx.post(base + "/v1/memory/notes", headers=admin, data={"text": "x"})  # a form post
    assert r.status_code == 400
    r = httpx.post(base + "/v1/memory/notes", headers={**admin, "Content-Type": "text/plain"},
                   content=b'{"text": "x"}')
    assert r.status_code == 400
    ok = httpx.post(base + "/v1/memory/notes", headers={**admin, "Origin": "http://127.0.0.1:8888"},
                    json={"text": "from a local notebook"})
    assert ok.status_code == 201


def test_no_filesystem_paths_in_open_answers(stack):
    for service in ("memory", "tools", "rag"):
        for path in ("/health", "/ready"):
            text = httpx.get(stack.url(service) + path, timeout=30).text
            assert str(stack.data_dir) not in text, (service, path, text)
    health = req(stack, "GET", "memory", "/v1/memory/health", role="guest").text
    assert str(stack.data_dir) not in health


def test_data_files_are_private(stack):
    for folder in (stack.data_dir / "auth", stack.data_dir / "memory", stack.data_dir / "tools"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
        for f in folder.iterdir():
            if f.is_file():
                assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


# -- a route nobody put in the table, an unknown role, the unauthenticated limit -----------------
def _app_with_an_unlisted_route(settings: Settings) -> FastAPI:
    app = FastAPI()
    instrument(app, "memory", settings=settings)

    @app.get("/v1/memory/notes")
    async def listed() -> dict:
        return {"ok": True}

    @app.get("/v1/memory/secret-new-route")
    async def unlisted() -> dict:
        return {"ok": True}

    @app.get("/whoami")
    async def whoami(request: Request) -> dict:
        return {"role": request.scope["suite.principal"].role}

    return app


def test_deny_by_default_and_the_unauthenticated_limit(tmp_path):
    settings = stack_settings(tmp_path, auth={"unauthenticated_per_minute": 5})
    keys = stack_keys(settings)
    store = KeyStore.open(settings.key_store_path)
    store.db.execute("INSERT INTO api_keys(id, name, role, key_sha256, created_at) VALUES (?,?,?,?,?)",
                     ("abcdefabcdef", "root?", "root", __import__("hashlib").sha256(
                         b"sk_suite_abcdefabcdef_" + b"R" * 43).hexdigest(), time.time()))
    store.close()
    with ServerThread(_app_with_an_unlisted_route(settings)) as server:
        get = lambda path, key: httpx.get(server.url + path, headers={"Authorization": f"Bearer {key}"})  # noqa: E731
        assert get("/v1/memory/notes", keys["guest"]).status_code == 200
        r = get("/v1/memory/secret-new-route", keys["admin"])
        assert r.status_code == 403 and "not in the policy table" in r.json()["error"]["message"]
        r = get("/v1/memory/notes", "sk_suite_abcdefabcdef_" + "R" * 43)
        assert r.status_code == 403 and "unknown role" in r.json()["error"]["message"]
        codes = [httpx.get(server.url + "/v1/memory/notes").status_code for _ in range(8)]
        assert codes == [401] * 5 + [429] * 3
        assert get("/v1/memory/notes", keys["guest"]).status_code == 200  # a valid key is never held back


def test_auth_off_is_explicit_and_refused_beyond_loopback(tmp_path):
    off = Settings(data_dir=tmp_path, auth={"enabled": False})
    startup.check(off)  # loopback: allowed, and announced
    assert "auth is OFF" in startup.notice(off)
    assert "no active key" in startup.notice(Settings(data_dir=tmp_path), 0)
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        with pytest.raises(startup.UnsafeStart) as info:
            startup.check(Settings(data_dir=tmp_path, host=host, auth={"enabled": False}))
        assert "SUITE_AUTH__ENABLED" in str(info.value)
    with pytest.raises(startup.UnsafeStart) as info:  # auth without TLS: keys in clear text on the wire
        startup.check(Settings(data_dir=tmp_path, host="0.0.0.0"))
    assert "SUITE_TLS__ENABLED" in str(info.value) and "suite tls init" in str(info.value)
    startup.check(Settings(data_dir=tmp_path, host="0.0.0.0", tls={"enabled": True}))  # the operator's choice
    with ServerThread(_app_with_an_unlisted_route(off)) as server:
        assert httpx.get(server.url + "/whoami").json() == {"role": "developer"}


# -- forwarding: each hop checks the caller's own key ----------------------------------------------
RECORDER = '''
from fastapi import FastAPI, Request
app = FastAPI()
seen = []

@app.get("/health")
async def health():
    return {"status": "ok"}

@app.get("/seen")
async def get_seen():
    return {"seen": seen}

@app.api_route("/{path:path}", methods=["GET", "POST"])
async def record(path: str, request: Request):
    seen.append({"path": "/" + path, "authorization": request.headers.get("authorization")})
    if path == "embed":
        return {"embeddings": [[0.1, 0.2]], "model": "m", "dimension": 2}
    if path == "v1/memory/search":
        return {"query": "q", "results": []}
    return {"choices": [{"message": {"content": "ok"}, "text": "ok"}], "model": "chat"}
'''


@pytest.mark.integration
def test_the_callers_key_is_forwarded_downstream(tmp_path):
    """tools -> memory, gateway -> inference: the downstream service sees the caller's own key, so it
    applies the caller's own role (no service lends its callers a credential of its own)."""
    from suite.testing import start_app_process

    proc, url = start_app_process(tmp_path, "recorder", RECORDER)
    port = int(url.rsplit(":", 1)[1])
    try:
        base = stack_settings(tmp_path / "data")
        at = port - base.port_offset
        settings = Settings(data_dir=base.data_dir, port_offset=base.port_offset,
                            ports={"memory": at, "inference_chat": at, "embedding": at})
        keys = stack_keys(settings)
        guest, developer = (f"Bearer {keys[r]}" for r in ("guest", "developer"))
        with serve(settings, "tools", "gateway", "rag"):
            r = httpx.post(settings.url("tools") + "/tools/memory_search", json={"query": "q"},
                           headers={"Authorization": guest}, timeout=30)
            assert r.status_code == 200, r.text
            r = httpx.post(settings.url("gateway") + "/v1/chat/completions", timeout=30,
                           json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
                           headers={"Authorization": guest})
            assert r.status_code == 200, r.text
            r = httpx.post(settings.url("rag") + "/index", timeout=30, headers={"Authorization": developer},
                           json={"collection": "c", "documents": [{"id": "d", "text": "hello"}]})
            assert r.status_code == 200, r.text
            seen_before_mcp = len(httpx.get(url + "/seen").json()["seen"])

            async def via_mcp():
                from harness.mcp_client import mcp_session

                async with mcp_session(settings.url("tools") + "/mcp", {"Authorization": guest}) as session:
                    return await session.call_tool("memory_search", {"query": "q"})

            assert not asyncio.run(via_mcp()).isError
        seen = httpx.get(url + "/seen").json()["seen"]
        assert [s["path"] for s in seen] == ["/v1/memory/search", "/v1/chat/completions", "/embed",
                                             "/v1/memory/search"]
        assert [s["authorization"] for s in seen] == [guest, guest, developer, guest]
        assert seen_before_mcp == 3
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration
def test_opening_the_store_again_in_one_process_keeps_other_processes_commits_visible(tmp_path):
    """Regression: touching the database file outside SQLite (to set its mode) released this
    process's locks; a CLI process closing its connection then deleted the WAL under the service,
    which stopped seeing keys created after that (401 'invalid API key' for a fresh key)."""
    from suite.testing import run_cli

    settings = Settings(data_dir=tmp_path)
    first = KeyStore.open(settings.key_store_path)
    second = KeyStore.open(settings.key_store_path)  # e.g. the auth layer beside the tool server's stores
    try:
        first.create("guest")
        assert run_cli(settings, "keys", "list").returncode == 0  # another process opens and closes it
        made = run_cli(settings, "keys", "create", "--role", "guest", "--json")
        key = __import__("json").loads(made.stdout)["key"]
        assert first.verify(key) is not None and second.verify(key) is not None
    finally:
        first.close()
        second.close()

"""Issue 10 on a real phase-3 stack: what a careless or hostile client sends never yields a 5xx, never
cools an upstream down, never stalls another client — and schemathesis fuzzes every service's real
``/openapi.json`` to keep it that way.

One stack for the whole module (CI time): phase 3, CPU, contexts of 1024 tokens, and generations
bounded by ``inference.max_tokens_cap`` (not by skipping the inference routes). The fuzzing budget is
small here (``FUZZ_EXAMPLES``, default 4 per operation and mode); raise it by hand for a deeper run:
``FUZZ_EXAMPLES=100 pytest tests/test_input_attacks.py -k fuzz``.
"""

from __future__ import annotations

import json
import os
import threading
import time

import httpx
import pytest

from suite.testing import auth, running_stack, stack_settings

pytestmark = pytest.mark.integration

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "4"))
MAX_TOKENS_CAP = 4
JSON = {"content-type": "application/json"}
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gemma_path):
    settings = stack_settings(tmp_path_factory.mktemp("attacks"), gemma_path,
                              inference={"max_tokens_cap": MAX_TOKENS_CAP})
    with running_stack(settings, 3) as s:
        yield s


@pytest.fixture(scope="module")
def admin(stack) -> dict[str, str]:
    return auth(stack, "admin")


def send(stack, service: str, method: str, path: str, body=None, headers=None) -> httpx.Response:
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    return httpx.request(method, stack.url(service) + path, content=content, timeout=120,
                         headers={**JSON, **(headers or {})})


# -- the table, row by row -----------------------------------------------------------------------
ROWS = [  # (service, method, path, body, expected status, expected error code)
    ("gateway", "POST", "/v1/chat/completions", b"[" * 100_000, 400, "json_too_deep"),
    ("gateway", "POST", "/v1/chat/completions", b"\xff", 400, "invalid_utf8"),
    ("inference-chat", "POST", "/v1/chat/completions",
     {"model": "chat", "messages": HI, "grammar": "not a grammar"}, 400, "invalid_sampling"),
    ("gateway", "POST", "/v1/chat/completions",
     {"model": "chat", "messages": HI, "grammar": "not a grammar"}, 400, "invalid_sampling"),
    ("inference-chat", "POST", "/v1/chat/completions",
     b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
     400, "non_finite_number"),
    ("inference-chat", "POST", "/v1/completions", {"prompt": "x" * 30_000_000}, 413, "body_too_large"),
    ("inference-chat", "POST", "/v1/completions", {"prompt": "word " * 150_000}, 400,
     "context_length_exceeded"),
    ("inference-chat", "POST", "/v1/completions", {"prompt": "hi", "logit_bias": {"99999999": 5}}, 400,
     "invalid_token"),
    ("tools", "POST", "/tools/read_file", b'{"path":' * 100 + b'"x"' + b"}" * 100, 400, "json_too_deep"),
    ("tools", "POST", "/tools/read_file", b'{"path": "\\ud800"}', 400, "invalid_text"),
    ("memory", "DELETE", "/v1/memory/notes/6117018804695242637312", None, 400, "invalid_parameters"),
    ("memory", "POST", "/v1/memory/notes", b'{"text": "a\\udc00b"}', 400, "invalid_text"),
    ("memory", "POST", "/v1/memory/search", {"query": "x" * 1_000_000}, 400, "invalid_parameters"),
    ("embedding", "POST", "/embed", b'{"texts": ["' + b"a" * 50_000_000 + b'"]}', 413, "body_too_large"),
    ("rag", "POST", "/query", b'{"collection": "c", "query": "q", "top_k": 1e400}', 400, "non_finite_number"),
    # found by schemathesis: names the OS cannot take (ValueError / ENAMETOOLONG escaped pathlib)
    ("rag", "POST", "/index", {"collection": "c", "folder": "J-\u0087\u0000x"}, 403, "bad_folder"),
    ("embedding", "POST", "/reload", {"model_path": "m\u0000"}, 400, "model_not_found"),
    ("embedding", "POST", "/reload", {"model_path": "m" * 300}, 400, "model_not_found"),
    ("inference-chat", "POST", "/v1/completions", {"prompt": ["one", "two"]}, 400, "invalid_parameters"),
]


@pytest.mark.parametrize("service,method,path,body,status,code", ROWS,
                         ids=[f"{r[0]}-{r[5]}-{i}" for i, r in enumerate(ROWS)])
def test_a_hostile_request_is_a_4xx_that_says_why(stack, admin, service, method, path, body, status, code):
    r = send(stack, service, method, path, body, admin)
    assert r.status_code == status, r.text[:300]
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_client_mistakes_never_fail_over_or_cool_the_gateway(stack, admin):
    gateway = stack.url("gateway")
    for grammar in ("not a grammar", "root ::= root", "root ::= ("):
        r = send(stack, "gateway", "POST", "/v1/chat/completions",
                 {"model": "chat", "messages": HI, "grammar": grammar}, admin)
        assert r.status_code == 400 and r.headers["x-suite-upstream"] == "chat"
        assert "x-suite-fallback-from" not in r.headers
    assert httpx.get(gateway + "/health").json()["upstreams"] == {"inference-chat": "ok", "inference-code": "ok"}
    assert "gateway_fallbacks_total{" not in httpx.get(gateway + "/metrics").text


def test_a_query_longer_than_the_chat_context_is_answered_within_it(stack, admin):
    n_ctx = stack.inference.chat.n_ctx
    docs = [{"id": f"d{i}", "text": f"Backups of kind {i} are kept for {i + 3} days. " * 40} for i in range(4)]
    assert send(stack, "rag", "POST", "/index", {"collection": "long", "documents": docs}, admin).status_code == 200
    query = ("How long are the backups kept, and why? " * 300)[:8000]  # ~2,000 tokens
    r = send(stack, "rag", "POST", "/query", {"collection": "long", "query": query, "answer": True}, admin)
    assert r.status_code == 200, r.text[:300]
    usage = r.json()["answered_by"]["usage"]
    assert usage["prompt_tokens"] + usage["completion_tokens"] <= n_ctx


def test_bad_clients_never_stall_others(stack, admin):
    """One client loops huge prompts and bad grammars; another's /health answers within 0.5 s and
    the gateway keeps serving chat from the chat model."""
    chat, gateway = stack.url("inference-chat"), stack.url("gateway")
    stop = threading.Event()
    attacks = [0]
    worst: dict[str, float] = {}

    def attacker() -> None:
        with httpx.Client(timeout=60, headers=admin) as c:
            while not stop.is_set():
                c.post(chat + "/v1/completions", json={"prompt": "word " * 200_000})  # ~1 MB, refused
                c.post(gateway + "/v1/chat/completions", json={"model": "chat", "messages": HI,
                                                              "grammar": "root ::= ("})
                c.post(chat + "/extras/tokenize", json={"input": "word " * 200_000})
                attacks[0] += 3

    def prober(url: str) -> None:
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                t = time.perf_counter()
                assert c.get(url + "/health").status_code == 200
                worst[url] = max(worst.get(url, 0.0), time.perf_counter() - t)
                time.sleep(0.05)

    threads = [threading.Thread(target=attacker), threading.Thread(target=attacker),
               threading.Thread(target=prober, args=(chat,)), threading.Thread(target=prober, args=(gateway,))]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)  # the attack is under way
        for _ in range(3):
            r = httpx.post(gateway + "/v1/chat/completions", timeout=120, headers=admin,
                           json={"model": "chat", "messages": [{"role": "user", "content": "Say hello."}]})
            assert r.status_code == 200 and r.headers["x-suite-upstream"] == "chat"
            assert "x-suite-fallback-from" not in r.headers
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert attacks[0] >= 6
    assert set(worst) == {chat, gateway} and max(worst.values()) < 0.5, worst


# -- fuzzing every service's OpenAPI ---------------------------------------------------------------------
FUZZED = ["gateway", "inference-chat", "embedding", "rag", "memory", "tools"]


@pytest.mark.parametrize("service", FUZZED)
def test_fuzzing_finds_no_server_error(stack, admin, service):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    base = stack.url(service)
    document = httpx.get(base + "/openapi.json", headers=admin, timeout=30).json()
    if service == "tools":  # each tool's arguments are its input schema (GET /tools): one operation each
        document["paths"].update(tool_operations(httpx.get(base + "/tools", headers=admin, timeout=30).json()))
    schema = schemathesis.openapi.from_dict(document)
    failures, ran = [], 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
            def fuzz(case) -> None:
                case.call_and_validate(base_url=base, checks=[not_a_server_error], headers=admin, timeout=120)

            try:
                fuzz()
                ran += 1
            except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
                continue
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}"[:2000])
    assert ran and not failures, "\n\n".join(failures)


def tool_operations(listing: dict) -> dict:
    """``POST /tools/<name>`` with the tool's input schema as the body, for every tool listed."""
    return {f"/tools/{tool['name']}": {"post": {
        "operationId": f"tool_{tool['name']}", "responses": {"200": {"description": "the tool's result"}},
        "requestBody": {"required": True, "content": {"application/json": {"schema": tool["input_schema"]}}}}}
        for tool in listing["tools"]}

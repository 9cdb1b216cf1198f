"""Phase 1 for real: chat, code and gateway processes, the openai client, fallback chat -> code."""

import httpx
import openai
import pytest

from suite.supervisor.process import ProcessBackend
from suite.testing import auth, running_stack, stack_keys, stack_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["batched", "serial"])
def phase1(request, tmp_path_factory, gemma_path):
    """A real phase-1 stack per inference engine: the batched default and llama_cpp.server's path."""
    s = stack_settings(tmp_path_factory.mktemp(f"phase1-{request.param}"), gemma_path,
                       inference={"engine": request.param})
    with running_stack(s, 1):
        yield s


def client(settings) -> openai.OpenAI:
    """The openai SDK, unchanged: its ``api_key`` is a guest key of the stack (sent as Bearer)."""
    return openai.OpenAI(base_url=settings.url("gateway") + "/v1", api_key=stack_keys(settings)["guest"],
                         max_retries=0)


def test_openai_client_needs_a_valid_key(phase1):
    for key in ("unused", "sk_suite_000000000000_" + "A" * 43):
        bad = openai.OpenAI(base_url=phase1.url("gateway") + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
    assert {m.id for m in client(phase1).models.list()} == {"chat", "code"}


def test_status_lists_three_ready_services(phase1):
    states = {s.name: s for s in ProcessBackend(phase1).status() if s.running}
    assert sorted(states) == ["gateway", "inference-chat", "inference-code"]
    assert all(s.healthy and s.ready for s in states.values())


def test_chat_completion_through_gateway_with_openai_client(phase1):
    resp = client(phase1).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0)
    assert resp.choices[0].message.content.strip()
    assert resp.usage.completion_tokens > 0 and resp.model == "chat"


def test_streaming_chat_and_code_completion(phase1):
    chunks = list(client(phase1).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Count: one, two,"}], max_tokens=10, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(chunks) >= 3 and text.strip()
    code = client(phase1).completions.create(model="code", prompt="def add(a, b):\n    return", max_tokens=8)
    assert code.choices[0].text and code.usage.completion_tokens > 0


def test_answers_do_not_depend_on_the_previous_request(phase1):
    def ask(prompt):
        return client(phase1).completions.create(model="chat", prompt=prompt, max_tokens=16, temperature=0
                                                 ).choices[0].text

    if phase1.inference.engine == "batched":
        # the default shared KV buffer: cached or concurrent neighbours move the logits in their last bits,
        # so a near-tie can go either way (README § prefix reuse, as llama-server says of cache_prompt);
        # exact repeats are the batch_invariant mode's, tested with reuse in tests/test_prefix_cache.py
        pytest.skip("the batched default does not promise bit-exact repeats (README § prefix reuse)")
    question = "Question: What is a health check in software?\nAnswer:"
    first = ask(question)
    ask("Something completely different here")
    assert ask(question) == first


def test_models_list_and_errors_in_one_shape(phase1):
    base = phase1.url("gateway")
    guest = auth(phase1, "guest")
    assert {m["id"] for m in httpx.get(base + "/v1/models", headers=guest).json()["data"]} == {"chat", "code"}
    r = httpx.post(base + "/v1/chat/completions", json={"model": "gpt-9", "messages": []}, headers=guest)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(base + "/v1/chat/completions", content=b"{not json",
                   headers={"content-type": "application/json", **guest})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(base + "/v1/chat/completions", json={"messages": []}, headers=guest)
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_required"
    r = httpx.post(phase1.url("inference-chat") + "/v1/chat/completions", json={"messages": "nope"}, headers=guest)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(phase1.url("inference-chat") + "/v1/completions", content=b"{oops",
                   headers={"content-type": "application/json", **guest})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    # through the gateway the upstream's 400 is passed on, not retried or failed over
    r = httpx.post(base + "/v1/chat/completions", json={"model": "chat", "messages": "nope"}, headers=guest)
    assert r.status_code == 400 and r.headers["x-suite-upstream"] == "chat"


def test_metrics_and_probes(phase1):
    httpx.post(phase1.url("gateway") + "/v1/completions", json={"model": "code", "prompt": "x", "max_tokens": 1},
               timeout=60, headers=auth(phase1, "guest"))
    text = httpx.get(phase1.url("gateway") + "/metrics").text
    assert 'gateway_upstream_requests_total{outcome="ok",upstream="inference-code"}' in text
    assert "http_request_duration_seconds_bucket" in text
    ready = httpx.get(phase1.url("inference-chat") + "/ready", timeout=60).json()
    assert ready["status"] == "ready" and ready["tokens"] == 1


def test_gateway_falls_back_to_code_when_chat_is_down_then_recovers(phase1):
    backend = ProcessBackend(phase1)
    assert backend.down(["inference-chat"]) == ["inference-chat"]
    try:
        r = httpx.post(phase1.url("gateway") + "/v1/chat/completions", timeout=120, headers=auth(phase1, "guest"),
                       json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6})
        assert r.status_code == 200, r.text
        assert r.headers["x-suite-upstream"] == "code" and r.headers["x-suite-fallback-from"] == "chat"
        assert r.json()["choices"][0]["message"]["content"] is not None
        ready = httpx.get(phase1.url("gateway") + "/ready", timeout=60)
        assert ready.status_code == 503 and "inference-chat" in ready.json()["reason"]
        metrics = httpx.get(phase1.url("gateway") + "/metrics").text
        assert 'gateway_fallbacks_total{requested="chat",served_by="code"} 1.0' in metrics
    finally:
        backend.up(1)
    r = httpx.post(phase1.url("gateway") + "/v1/chat/completions", timeout=120, headers=auth(phase1, "guest"),
                   json={"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert r.status_code == 200
    # the restarted chat upstream may still be cooling down; readiness must be back either way
    assert httpx.get(phase1.url("gateway") + "/ready", timeout=60).status_code == 200


def test_client_mistakes_are_400_before_the_model_on_both_engines(phase1):
    """Issue 10 on each engine: no 500 for a bad grammar or NaN, no abort for out-of-vocabulary ids."""
    chat = phase1.url("inference-chat")
    hi = [{"role": "user", "content": "hi"}]
    key = auth(phase1, "guest")
    for body, code in (({"messages": hi, "grammar": "not a grammar"}, "invalid_sampling"),
                       ({"messages": hi, "logit_bias": {"99999999": 1.0}}, "invalid_token")):
        r = httpx.post(chat + "/v1/chat/completions", json=body, timeout=60, headers=key)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == code
    r = httpx.post(chat + "/v1/completions", content=b'{"prompt": "hi", "temperature": NaN}', timeout=60,
                   headers={"content-type": "application/json", **key})
    assert r.status_code == 400 and r.json()["error"]["code"] == "non_finite_number"
    # an empty prompt list is the empty prompt on both engines (llama_cpp.server's reading; the batched
    # engine raised IndexError, a 500 found by schemathesis with FUZZ_EXAMPLES=150); two prompts are a 400
    for prompts, status in (([], 200), (["one", "two"], 400)):
        r = httpx.post(chat + "/v1/completions", json={"prompt": prompts, "max_tokens": 2}, timeout=60, headers=key)
        assert r.status_code == status, (prompts, r.text)
    r = httpx.post(chat + "/extras/detokenize", json={"tokens": [10**9]}, timeout=60,
                   headers=key)  # serial: llama.cpp aborted the process
    assert r.status_code in (400, 404, 405), r.text
    r = httpx.post(chat + "/extras/tokenize", json={"input": "word " * 200_000}, timeout=60, headers=key)
    assert r.status_code == 400 and r.json()["error"]["code"] == "input_too_long"
    assert httpx.get(chat + "/health").status_code == 200  # still alive
    assert httpx.post(phase1.url("gateway") + "/v1/completions", timeout=120, headers=key,
                      json={"model": "chat", "prompt": "Hello", "max_tokens": 2}).status_code == 200


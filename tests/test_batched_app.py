"""The batched inference service over real HTTP: OpenAI surface, streaming, 429s, probes, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import httpx
import openai
import pytest

from harness.health import probe_until
from suite.inference.app import create_app
from suite.testing import ServerThread, stack_settings

# This module measures the engine behind the OpenAI surface; the trust boundary in front of it is
# tested in test_auth (and with keys on a real stack in test_phase1), so keys are off here, explicitly.
NO_AUTH = {"enabled": False}
PROMPT = "Question: What is a health check in software?\nAnswer:"
QUESTIONS = ["What is a health check?", "Name a colour.", "What is 2 + 2?", "Say hello.",
             "What is Python?", "Name a fruit.", "What is the sun?", "Count to three."]


@contextlib.contextmanager
def serve(settings, role: str = "chat", probe: str = "/ready"):
    """Run the service's app on its free port in a thread until the block ends, once ``probe`` is 200."""
    app = create_app(settings, role)
    with ServerThread(app, port=settings.port(f"inference-{role}"), deadline_s=240) as server:
        if not probe_until(server.url + probe, start_period_s=240, timeout_s=60).ok:
            raise RuntimeError("service did not become ready")
        yield server.url


@pytest.fixture(scope="module")
def batched(tmp_path_factory, gemma_path):
    s = stack_settings(tmp_path_factory.mktemp("batched"), gemma_path,
                       inference={"engine": "batched", "slots": 4, "queue_limit": 8, "batch_invariant": True},
                       auth=NO_AUTH)
    with serve(s) as base:
        yield base


@pytest.fixture(scope="module")
def batched_default(tmp_path_factory, gemma_path):
    """Default engine settings (repacked weights, shared with the serial loader), prefix cache off: a
    lone request then has the unified KV buffer to itself, as on the serial path (cached cells
    elsewhere in the buffer move the attention's sums in their last bits: test_prefix_cache.py)."""
    s = stack_settings(tmp_path_factory.mktemp("batched-default"), gemma_path,
                       inference={"engine": "batched", "slots": 2, "queue_limit": 2, "prefix_cache_tokens": 0},
                       auth=NO_AUTH)
    with serve(s) as base:
        yield base


def sse_events(base: str, path: str, body: dict) -> list[str]:
    with httpx.stream("POST", f"{base}{path}", json=body, timeout=120) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [line[len("data: "):] for line in lines[:-1]]


@pytest.mark.integration
def test_models_and_completion_shape(batched):
    models = httpx.get(f"{batched}/v1/models").json()
    assert models["data"][0]["id"] == "chat" and models["object"] == "list"
    r = httpx.post(f"{batched}/v1/completions", timeout=120,
                   json={"model": "chat", "prompt": PROMPT, "max_tokens": 8, "temperature": 0})
    body = r.json()
    assert r.status_code == 200, body
    assert body["object"] == "text_completion" and body["model"] == "chat"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 14, "completion_tokens": 8, "total_tokens": 22}
    echo = httpx.post(f"{batched}/v1/completions", timeout=120,
                      json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "echo": True}).json()
    assert echo["choices"][0]["text"] == PROMPT + body["choices"][0]["text"]


def test_stream_matches_non_stream(batched):
    req = {"prompt": PROMPT, "max_tokens": 16, "temperature": 0}
    whole = httpx.post(f"{batched}/v1/completions", json=req, timeout=120).json()["choices"][0]["text"]
    chunks = [json.loads(d) for d in sse_events(batched, "/v1/completions", {**req, "stream": True})]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert len({c["id"] for c in chunks}) == 1

    chat = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12, "temperature": 0}
    full = httpx.post(f"{batched}/v1/chat/completions", json=chat, timeout=120).json()
    assert full["object"] == "chat.completion" and full["usage"]["completion_tokens"] >= 1
    events = [json.loads(d) for d in sse_events(batched, "/v1/chat/completions", {**chat, "stream": True})]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant"}
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == full["choices"][0]["message"]["content"]


@pytest.mark.integration
def test_openai_client_eight_concurrent_streams(batched):
    """8 concurrent streams (4 slots + waiting line): each equals its own one-at-a-time answer."""
    client = openai.AsyncOpenAI(base_url=f"{batched}/v1", api_key="x", timeout=300)

    async def ask(q: str) -> tuple[str, set[str]]:
        stream = await client.completions.create(
            model="chat", prompt=f"Question: {q}\nAnswer:", max_tokens=16, temperature=0, stream=True)
        parts, ids = [], set()
        async for chunk in stream:
            ids.add(chunk.id)
            parts.append(chunk.choices[0].text)
        return "".join(parts), ids

    async def main():
        alone = [await ask(q) for q in QUESTIONS]
        together = await asyncio.gather(*(ask(q) for q in QUESTIONS))
        return alone, together

    alone, together = asyncio.run(main())
    for q, (a, _), (t, ids) in zip(QUESTIONS, alone, together):
        assert t == a, q
        assert len(ids) == 1
    assert len({next(iter(ids)) for _, ids in together}) == len(QUESTIONS)


def test_openai_client_chat_streams(batched):
    client = openai.OpenAI(base_url=f"{batched}/v1", api_key="x", timeout=300)
    stream = client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Say hello."}], max_tokens=8, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_bad_requests_get_400_in_common_shape(batched):
    for body in ({"prompt": PROMPT, "n": 5}, {"prompt": PROMPT, "logprobs": 6}, {"prompt": PROMPT, "max_tokens": "many"},
                 {"prompt": "word " * 2000}, {"prompt": PROMPT, "temperature": "hot"},
                 {"prompt": PROMPT, "logit_bias": {"abc": 1.0}}):
        r = httpx.post(f"{batched}/v1/completions", json=body, timeout=60)
        assert r.status_code == 400, (body, r.text)
        assert set(r.json()["error"]) == {"message", "type", "code"}


def test_probes_and_metrics(batched):
    health = httpx.get(f"{batched}/health").json()
    assert health["engine"] == "batched" and health["slots"] == 4
    assert health["kv_mib_per_slot"] == 18.0  # Gemma 3 270M: 18 layers x 1 KV head x (256 + 256) x 2 B x 1024
    threads = health["decode_threads"]  # inference.adaptive_threads is on by default
    assert 1 <= threads["now"] <= threads["configured"] and threads["changes"] >= 0
    ready = httpx.get(f"{batched}/ready", timeout=60).json()
    assert ready["status"] == "ready" and ready["tokens"] == 1
    text = httpx.get(f"{batched}/metrics").text
    for name in ("inference_active_slots", "inference_queue_depth", "inference_tokens_generated_total",
                 "inference_time_to_first_token_seconds_bucket"):
        assert name in text


@pytest.mark.integration
def test_flood_beyond_slots_and_queue_gets_429(batched_default):
    """2 slots + 2 waiting: of 8 simultaneous long streams, the extra ones are refused at once."""

    async def one(client: httpx.AsyncClient) -> tuple[int, str | None]:
        body = {"prompt": PROMPT, "max_tokens": 48, "temperature": 0, "stream": True}
        async with client.stream("POST", "/v1/completions", json=body) as r:
            await r.aread()
            return r.status_code, r.headers.get("retry-after")

    async def main():
        async with httpx.AsyncClient(base_url=batched_default, timeout=300) as client:
            return await asyncio.gather(*(one(client) for _ in range(8)))

    t0 = time.monotonic()
    results = asyncio.run(main())
    codes = sorted(code for code, _ in results)
    assert codes.count(200) == 4 and codes.count(429) == 4, codes
    assert all(retry for code, retry in results if code == 429)
    assert time.monotonic() - t0 < 240


@pytest.mark.integration
def test_readiness_takes_a_slot_and_a_flood_of_probes_costs_one_check(batched_default):
    """No side door: with both slots and the waiting line taken, /ready says not ready instead of
    jumping the queue; 40 concurrent probes of an idle service share one 1-token check, which the
    token metrics do not count."""

    def tokens() -> float:
        text = httpx.get(f"{batched_default}/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("inference_tokens_generated_total{"))

    async def flood(n: int) -> list[int]:
        async with httpx.AsyncClient(base_url=batched_default, timeout=60) as client:
            return [r.status_code for r in await asyncio.gather(*(client.get("/ready") for _ in range(n)))]

    time.sleep(1.1)  # let an earlier passing answer expire
    before = tokens()
    assert asyncio.run(flood(40)) == [200] * 40
    assert tokens() == before  # probes are not inference traffic (issue 27)

    async def busy_then_probe():
        body = {"prompt": PROMPT, "max_tokens": 200, "temperature": 0, "stream": True}
        async with httpx.AsyncClient(base_url=batched_default, timeout=300) as client:
            streams = [client.stream("POST", "/v1/completions", json=body) for _ in range(4)]
            opened = [await s.__aenter__() for s in streams]
            await asyncio.sleep(1.2)  # the shared passing answer has expired
            ready = await client.get("/ready")
            for s in streams:
                await s.__aexit__(None, None, None)
            return [r.status_code for r in opened], ready

    codes, ready = asyncio.run(busy_then_probe())
    assert codes == [200] * 4
    assert ready.status_code == 503 and "overloaded" in ready.json()["reason"]


@pytest.mark.integration
def test_default_engine_equals_serial_service(batched_default, tmp_path, gemma_path):
    """Temperature 0, one sequence: the batched service says what llama_cpp.server says.

    Each serial answer comes from a fresh serial service (probed on /health, not /ready): a warm
    llama_cpp.server reuses the cached prefix of its previous prompt and evaluates the rest in a
    differently sized batch, which moves its own numbers.
    """
    cases = [("/v1/completions",
              {"model": "chat", "prompt": PROMPT, "max_tokens": 32, "temperature": 0, "seed": 3}),
             ("/v1/chat/completions",
              {"model": "chat", "messages": [{"role": "user", "content": "Name a fruit."}],
               "max_tokens": 24, "temperature": 0})]
    for path, req in cases:
        s = stack_settings(tmp_path, gemma_path, inference={"engine": "serial"}, auth=NO_AUTH)
        with serve(s, probe="/health") as serial:
            want = httpx.post(f"{serial}{path}", json=req, timeout=120).json()
        got = httpx.post(f"{batched_default}{path}", json=req, timeout=120).json()
        assert got["choices"] == want["choices"] and got["usage"] == want["usage"], path


def metric(text: str, name: str) -> float:
    """The value of an unlabelled-but-for-service sample in a /metrics text (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.integration
def test_prefix_cache_counters_and_probes_not_counted(batched):
    """/metrics and /health show the prefix cache at work; a /ready probe is not inference traffic."""
    system = "You answer questions about running services, in one sentence, without numbers. " * 4
    before = httpx.get(f"{batched}/metrics").text
    for q in QUESTIONS[:3]:
        r = httpx.post(f"{batched}/v1/completions", timeout=120,
                       json={"prompt": f"{system}Question: {q}\nAnswer:", "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200, r.text
    after = httpx.get(f"{batched}/metrics").text
    gained = {name: metric(after, name) - metric(before, name) for name in (
        "inference_prefix_cache_hits_total", "inference_prefix_cache_lookups_total",
        "inference_prompt_tokens_reused_total", "inference_prompt_tokens_prefilled_total")}
    assert gained["inference_prefix_cache_lookups_total"] == 3 and gained["inference_prefix_cache_hits_total"] >= 2
    assert gained["inference_prompt_tokens_reused_total"] >= 2 * 60  # the shared instructions, twice
    assert metric(after, "inference_kv_cells_used") >= metric(after, "inference_prefix_cache_cells") > 0
    cache = httpx.get(f"{batched}/health").json()["prefix_cache"]
    assert cache["enabled"] and cache["hits"] >= 2 and 0 < cache["reused_ratio"] < 1
    tokens = metric(after, "inference_tokens_generated_total")
    assert httpx.get(f"{batched}/ready", timeout=60).json()["tokens"] == 1
    assert metric(httpx.get(f"{batched}/metrics").text, "inference_tokens_generated_total") == tokens

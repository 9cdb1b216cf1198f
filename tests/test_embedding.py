"""The embedding service with the real MiniLM model over real HTTP (uvicorn on a free port).

Only the embedding service is needed here, so it runs in this process's uvicorn thread instead of a
whole phase-2 stack; the gateway path of ``/v1/embeddings`` is covered in ``test_rag.py``.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from suite.embedding.app import create_app
from suite.settings import Settings
from suite.testing import ServerThread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedding_url(tmp_path_factory):
    # the service's own behaviour; its trust boundary is tested in test_auth, so keys are off here,
    # explicitly, with the anonymous caller an admin (reload is an admin route)
    settings = Settings(data_dir=tmp_path_factory.mktemp("embedding"),
                        auth={"enabled": False, "anonymous_role": "admin"})
    with ServerThread(create_app(settings), deadline_s=180) as server:
        yield server.url


def embed(url: str, texts: list, **kw) -> httpx.Response:
    return httpx.post(url + "/embed", json={"texts": texts}, timeout=120, **kw)


def test_health_reports_model_and_dimension(embedding_url):
    body = httpx.get(embedding_url + "/health").json()
    assert body["status"] == "ok"
    assert body["model"] == "all-MiniLM-L6-v2" and body["dimension"] == 384


def test_ready_embeds_one_string(embedding_url):
    r = httpx.get(embedding_url + "/ready", timeout=60)
    assert r.status_code == 200 and r.json()["dimension"] == 384


def test_one_text_gives_one_unit_384_dim_vector(embedding_url):
    body = embed(embedding_url, ["hello world"]).json()
    assert body["count"] == 1 and body["dimension"] == 384 and body["truncated"] is False
    vec = np.array(body["embeddings"][0])
    assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-3


def test_a_batch_keeps_order_and_meaning(embedding_url):
    texts = ["The cat sits on the mat.", "A kitten is sitting on a rug.", "Quarterly tax filing deadlines."]
    vecs = np.array(embed(embedding_url, texts).json()["embeddings"])
    assert vecs.shape == (3, 384)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2  # related texts are closer


def test_empty_list_gives_empty_list(embedding_url):
    body = embed(embedding_url, []).json()
    assert body["embeddings"] == [] and body["count"] == 0 and body["truncated"] is False


def test_more_than_1024_texts_are_truncated_and_reported(embedding_url):
    r = embed(embedding_url, [f"t{i}" for i in range(1030)])
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 1024 and body["truncated"] is True
    assert body["truncation"]["texts_dropped"] == 6 and body["truncation"]["texts_received"] == 1030


def test_texts_over_8000_chars_are_cut_and_reported(embedding_url):
    body = embed(embedding_url, ["short", "word " * 2000]).json()  # 10000 chars
    assert body["count"] == 2 and body["truncated"] is True
    assert body["truncation"]["cut_texts"] == [1] and body["truncation"]["max_chars"] == 8000


@pytest.mark.parametrize("payload", [{}, {"texts": "not a list"}, {"texts": [1, 2]}])
def test_bad_input_is_400_in_the_common_shape(embedding_url, payload):
    r = httpx.post(embedding_url + "/embed", json=payload)
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "code"}


def test_openai_client_works_unchanged(embedding_url):
    from openai import OpenAI

    client = OpenAI(base_url=embedding_url + "/v1", api_key="unused")
    one = client.embeddings.create(model="all-MiniLM-L6-v2", input="안녕하세요, 세계")  # default encoding
    many = client.embeddings.create(model="x", input=["a", "b"], encoding_format="float")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    assert [d.index for d in many.data] == [0, 1] and many.usage.prompt_tokens > 0
    native = np.array(embed(embedding_url, ["안녕하세요, 세계"]).json()["embeddings"][0])
    assert np.allclose(native, one.data[0].embedding, atol=1e-5)
    assert [m.id for m in client.models.list()] == [one.model]  # discovery, as other embedding servers answer it


def test_openai_refuses_token_arrays_and_other_dimensions(embedding_url):
    r = httpx.post(embedding_url + "/v1/embeddings", json={"model": "m", "input": [[1, 2, 3]]})
    assert r.status_code == 400 and "token arrays" in r.json()["error"]["message"]
    r = httpx.post(embedding_url + "/v1/embeddings", json={"model": "m", "input": "a", "dimensions": 10})
    assert r.status_code == 400


def test_concurrent_single_text_requests_are_batched(embedding_url):
    before = httpx.get(embedding_url + "/health").json()

    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(client.post(embedding_url + "/embed", json={"texts": [f"text {i}"]})
                                          for i in range(16)))

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    after = httpx.get(embedding_url + "/health").json()
    assert after["texts"] - before["texts"] == 16
    assert after["batches"] - before["batches"] < 16  # fewer encodes than requests


def test_reload_swaps_the_model_without_dropping_requests(embedding_url):
    async def scenario():
        async with httpx.AsyncClient(timeout=180) as client:
            reload = asyncio.create_task(client.post(embedding_url + "/reload", json={}))
            during = [client.post(embedding_url + "/embed", json={"texts": [f"during reload {i}"]})
                      for i in range(8)]
            return await reload, await asyncio.gather(*during)

    reloaded, during = asyncio.run(scenario())
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["dimension"] == 384 and reloaded.json()["previous"]["model"] == "all-MiniLM-L6-v2"
    assert all(r.status_code == 200 and r.json()["count"] == 1 for r in during)
    assert embed(embedding_url, ["after"]).status_code == 200


def test_reload_with_a_bad_path_keeps_the_old_model(embedding_url, tmp_path):
    r = httpx.post(embedding_url + "/reload", json={"model_path": str(tmp_path / "missing")})
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(embedding_url + "/reload", json={"model_path": str(tmp_path)}, timeout=60)  # empty dir
    assert r.status_code == 400 and r.json()["error"]["code"] == "model_load_failed"
    assert httpx.get(embedding_url + "/health").json()["model"] == "all-MiniLM-L6-v2"

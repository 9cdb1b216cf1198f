"""RAG parts that need no running services: chunking, prompt, folders, and the app's error answers."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from suite.rag.chunking import chunk_text
from suite.rag.files import FolderError, documents_from_folder, resolve_folder
from suite.rag.prompt import build_messages
from suite.settings import Settings
from suite.testing import auth
from suite.vectorstore import Hit


# -- chunking -----------------------------------------------------------------------------------
def test_short_text_is_one_chunk():
    assert chunk_text("  hello world  ", 100, 10) == ["hello world"]
    assert chunk_text("   \n ", 100, 10) == []


def test_chunks_respect_size_cover_the_text_and_overlap():
    words = [f"w{i}" for i in range(300)]
    chunks = chunk_text(" ".join(words), size=120, overlap=30)
    assert all(len(c) <= 120 for c in chunks)
    assert all(not c.startswith(" ") and not c.endswith(" ") for c in chunks)
    seen = set(" ".join(chunks).split())
    assert seen == set(words)  # nothing lost, no word cut in half
    assert set(chunks[0].split()) & set(chunks[1].split())  # neighbours share context


def test_chunks_prefer_paragraph_and_sentence_boundaries():
    text = "First paragraph sentence one. Sentence two.\n\nSecond paragraph is here. And more text follows."
    chunks = chunk_text(text, size=60, overlap=0)
    assert chunks[0] == "First paragraph sentence one. Sentence two."


def test_korean_text_is_cut_at_sentence_ends():
    text = "벡터 데이터베이스는 임베딩을 저장합니다. " * 20
    chunks = chunk_text(text, size=100, overlap=20)
    assert len(chunks) > 1 and all(len(c) <= 100 for c in chunks)
    assert all(c.endswith("다.") for c in chunks)


def test_text_without_spaces_is_still_cut():
    chunks = chunk_text("x" * 250, size=100, overlap=10)
    assert [len(c) for c in chunks] == [100, 100, 70]


@pytest.mark.parametrize("size,overlap", [(0, 0), (10, 10), (10, -1)])
def test_bad_chunk_parameters_are_refused(size, overlap):
    with pytest.raises(ValueError):
        chunk_text("abc", size, overlap)


# -- prompt -------------------------------------------------------------------------------------
def test_prompt_numbers_sources_and_caps_context():
    hits = [Hit("a", 0, "§" * 80, 0.9), Hit("b", 0, "¤" * 80, 0.8), Hit("c", 0, "¶" * 80, 0.7)]
    (msg,) = build_messages("질문?", hits, max_chars=120)
    assert msg["role"] == "user"
    assert "[1] (a)" in msg["content"] and "[2] (b)" in msg["content"] and "(c)" not in msg["content"]
    assert msg["content"].count("§") + msg["content"].count("¤") == 120
    assert "Question: 질문?" in msg["content"]


async def chars(text: str) -> int:
    """A stand-in tokenizer: one token per character."""
    return len(text)


def fit(question, hits, budget, max_chars=10_000):
    import asyncio

    from suite.rag.prompt import fit_messages

    (msg,) = asyncio.run(fit_messages(question, hits, max_chars, budget, chars))
    return msg["content"]


def test_a_prompt_that_fits_is_left_alone():
    hits = [Hit("a", 0, "alpha " * 10, 0.9), Hit("b", 0, "beta " * 10, 0.8)]
    assert fit("q?", hits, budget=10_000) == build_messages("q?", hits, 10_000)[0]["content"]


def test_context_chunks_are_cut_before_the_question():
    hits = [Hit("a", 0, "§" * 300, 0.9), Hit("b", 0, "¤" * 300, 0.8), Hit("c", 0, "¶" * 300, 0.7)]
    from suite.rag.prompt import render

    question = "Q" * 100
    budget = len(render("", [])) + 100 + 310 + 150  # the instruction, the question, line [1], half of [2]
    content = fit(question, hits, budget=budget)
    assert len(content) <= budget
    assert question in content  # whole
    assert content.count("§") == 300 and 0 < content.count("¤") < 300 and "¶" not in content


def test_the_question_is_cut_last_and_a_hopeless_budget_says_why():
    from suite.rag.prompt import PromptTooLong

    content = fit("Q" * 5000, [Hit("a", 0, "§" * 300, 0.9)], budget=600)
    assert len(content) <= 600 and "§" not in content and "Q" * 50 in content
    with pytest.raises(PromptTooLong):
        fit("q", [], budget=20)


# -- folders ------------------------------------------------------------------------------------
def test_folder_names_the_os_cannot_take_are_400(tmp_path):
    for name in (str(tmp_path / "a\x00b"), str(tmp_path / ("n" * 300))):
        with pytest.raises(FolderError) as info:
            resolve_folder(name, [tmp_path])
        assert info.value.status == 400


def test_folders_outside_allowed_dirs_are_refused(tmp_path):
    allowed = tmp_path / "docs"
    allowed.mkdir()
    with pytest.raises(FolderError) as err:
        resolve_folder(str(tmp_path), [allowed])
    assert err.value.status == 403
    with pytest.raises(FolderError) as err:
        resolve_folder(str(allowed / ".." / ".."), [allowed])
    assert err.value.status == 403
    with pytest.raises(FolderError) as err:
        resolve_folder(str(allowed), [])
    assert err.value.status == 403
    assert resolve_folder(str(allowed), [allowed]) == allowed.resolve()


def test_documents_from_text_and_json_files(tmp_path):
    (tmp_path / "a.md").write_text("# 제목\n본문", encoding="utf-8")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    (tmp_path / "set.json").write_text(json.dumps({"documents": [{"id": "j1", "text": "json doc"}]}))
    docs = documents_from_folder(tmp_path)
    assert sorted(d.id for d in docs) == ["a.md", "j1"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FolderError):
        documents_from_folder(tmp_path)


def test_links_in_an_indexed_folder_lead_nowhere(tmp_path):
    """A symlink or a hard link planted in an allowed folder must not index a file outside it."""
    folder, outside = tmp_path / "docs", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("outside secret")
    (folder / "a.txt").write_text("inside")
    (folder / "link.txt").symlink_to(outside / "secret.txt")
    (folder / "hard.txt").hardlink_to(outside / "secret.txt")
    (folder / "sub").symlink_to(outside, target_is_directory=True)
    assert [d.id for d in documents_from_folder(folder)] == ["a.txt"]


# -- the app with no dependencies running -------------------------------------------------------
@pytest.fixture
def lonely_rag(tmp_path):
    """The RAG app on ports where nothing listens: every dependency is down."""
    from suite.rag.app import create_app

    settings = Settings(data_dir=tmp_path, port_offset=50000 - 8000 + 137)  # no service there
    with TestClient(create_app(settings), base_url="http://127.0.0.1",  # Host is checked
                    headers=auth(settings, "developer")) as client:
        yield client


def test_embedding_down_gives_503_with_retry_after(lonely_rag):
    r = lonely_rag.post("/index", json={"collection": "c", "documents": [{"id": "1", "text": "hello"}]})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "5"
    assert r.json()["error"]["code"] == "embedding_unavailable"
    health = lonely_rag.get("/health").json()
    assert health["dependencies"]["embedding"]["state"] == "down" and health["degraded"] is True
    assert lonely_rag.get("/ready").status_code == 503


def test_unknown_collection_is_404_in_the_common_shape(lonely_rag):
    r = lonely_rag.post("/query", json={"collection": "nope", "query": "anything"})
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"message", "type", "code"}
    assert r.json()["error"]["code"] == "collection_not_found"
    assert lonely_rag.get("/collections/nope").status_code == 404


@pytest.mark.parametrize("body", [
    {"collection": "c"},                                                   # nothing to index
    {"collection": "bad name!", "documents": [{"id": "1", "text": "x"}]},  # collection name
    {"collection": "c", "documents": [{"id": "", "text": "x"}]},          # empty id
    {"collection": "c", "documents": [{"id": "1", "text": ""}]},          # empty text
    {"collection": "c", "documents": [{"id": "1", "text": "a"}, {"id": "1", "text": "b"}]},
    {"collection": "c", "folder": "/etc"},                                 # no allowed dirs
])
def test_bad_index_input_is_a_4xx_with_a_message(lonely_rag, body):
    r = lonely_rag.post("/index", json=body)
    assert r.status_code in (400, 403), r.text
    assert r.json()["error"]["message"]


def test_bad_query_input_is_400(lonely_rag):
    for body in ({"collection": "c"}, {"collection": "c", "query": ""},
                 {"collection": "c", "query": "q", "top_k": 0}):
        r = lonely_rag.post("/query", json=body)
        assert r.status_code == 400 and r.json()["error"]["message"]
    assert lonely_rag.post("/query", content=b"{not json", headers={"content-type": "application/json"}
                           ).status_code == 400

"""The RAG service killed with SIGKILL in the middle of a big ``/index`` (a document of 200 chunks,
four of 50), as the issue checks it from outside: after the restart every document is all of its
chunks or absent, one the service acknowledged is all there, the collection's count is exactly the
documents' chunks, and a query answers."""

from __future__ import annotations

import random
import signal
import threading
import time

import httpx
import pytest

from suite.rag.chunking import chunk_text
from suite.testing import auth, serve_processes, service_process, stack_settings, wait_until_ready

pytestmark = pytest.mark.integration


def text(doc: str, chunks: int) -> str:
    words = " ".join(f"{doc}-word{i}" for i in range(chunks * 70))
    return words + f" END-{doc}"


def test_a_kill_mid_index_leaves_whole_documents_and_a_collection_that_answers(tmp_path):
    settings = stack_settings(tmp_path / "data")
    rng = random.Random(200)
    expected: dict[str, int] = {}
    acked: set[str] = set()
    with serve_processes(settings, "embedding", "rag") as procs:
        rag = procs["rag"]
        for round_ in range(3):
            docs = [{"id": f"r{round_}-big", "text": text(f"r{round_}-big", 200)}] + \
                   [{"id": f"r{round_}-d{i}", "text": text(f"r{round_}-d{i}", 50)} for i in range(4)]
            for d in docs:
                expected[d["id"]] = len(chunk_text(d["text"], settings.rag.chunk_chars, settings.rag.chunk_overlap))
            answer: dict = {}

            def index(docs=docs, answer=answer) -> None:
                try:
                    answer["resp"] = httpx.post(settings.url("rag") + "/index", headers=auth(settings, "developer"),
                                                json={"collection": "big", "documents": docs}, timeout=600)
                except httpx.HTTPError as exc:
                    answer["error"] = exc

            worker = threading.Thread(target=index)
            worker.start()
            time.sleep(rng.uniform(1.0, 6.0))
            rag.send_signal(signal.SIGKILL)
            rag.wait()
            worker.join(timeout=600)
            if "resp" in answer and answer["resp"].status_code == 200:
                acked.update(d["id"] for d in docs)
            rag = procs["rag"] = service_process(settings, "rag")
            wait_until_ready(settings, "rag", proc=rag)
        headers = auth(settings, "developer")
        present = 0
        for doc_id, n in expected.items():
            resp = httpx.get(settings.url("rag") + f"/collections/big/documents/{doc_id}", headers=headers,
                             params={"text": "false"}, timeout=60)
            if resp.status_code == 404:
                assert doc_id not in acked, f"acknowledged {doc_id} lost"
                continue
            assert resp.json()["chunk_numbers"] == list(range(n)), f"{doc_id} is partial"
            present += n
        info = httpx.get(settings.url("rag") + "/collections/big", headers=headers, timeout=60)
        if present:
            assert info.json()["points"] == present  # no stray or duplicated point
            query = httpx.post(settings.url("rag") + "/query", headers=headers, timeout=120,
                               json={"collection": "big", "query": "word12", "answer": False})
            assert query.status_code == 200 and query.json()["sources"]
        else:
            assert info.status_code in (200, 404)

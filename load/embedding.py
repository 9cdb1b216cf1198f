"""Embedding service: ``POST /embed`` with two short texts (the seed's contract: 384-dim vectors), or,
with ``LOAD_EMBED_MODEL``, OpenAI ``POST /v1/embeddings`` of that model (a target file's server).

By hand::

    locust -f load/embedding.py --host http://127.0.0.1:8003
"""

from __future__ import annotations

import random

from _common import SuiteUser
from locust import task

TEXTS = ["Backups run nightly and are kept for seven days.",
         "The gateway routes chat and code requests to local models.",
         "로컬 AI 스택의 상태를 확인합니다.",
         "Qdrant stores the vectors of every indexed chunk."]


class Embedding(SuiteUser):
    service = "embedding"
    network_timeout = 120.0

    @task
    def embed(self) -> None:
        if self.config.embed_model:  # an OpenAI-compatible embedding server of a target file
            self.post_json("/v1/embeddings", {"model": self.config.embed_model, "input": random.sample(TEXTS, 2)},
                           name="embed", expect="data")
        else:
            self.post_json("/embed", {"texts": random.sample(TEXTS, 2)}, name="embed", expect="embeddings")

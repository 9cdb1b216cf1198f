"""Embedding service: ``POST /embed`` with two short texts (the seed's contract: 384-dim vectors).

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
        self.post_json("/embed", {"texts": random.sample(TEXTS, 2)}, name="embed", expect="embeddings")

"""A mixed workload through one user: code completions, streamed chat and, from phase 2
(``LOAD_PHASE``), embeddings and RAG queries, weighted roughly like an assistant's day.

By hand::

    locust -f load/mixed.py --host http://127.0.0.1:8000
"""

from __future__ import annotations

import random

from _common import SuiteUser, service_url
from locust import task

EMBEDDING, RAG = service_url("embedding"), service_url("rag")


class Mixed(SuiteUser):
    service = "gateway"

    @task(3)
    def code(self) -> None:
        self.post_json("/v1/completions", {"model": "code", "prompt": "def add(a, b):",
                                           "max_tokens": self.config.max_tokens},
                       name="code completion", expect="choices")

    @task(2)
    def chat(self) -> None:
        self.post_stream("/v1/chat/completions",
                         {"model": "chat", "stream": True, "max_tokens": self.config.max_tokens,
                          "messages": [{"role": "user", "content": "Say hello in French."}]},
                         name="chat stream")

    @task(2)
    def embed(self) -> None:
        if self.config.phase < 2:
            return self.chat()
        self.post_json(EMBEDDING + "/embed", {"texts": ["a", "b"]}, name="embed", expect="embeddings")

    @task(1)
    def rag(self) -> None:
        if self.config.phase < 2:
            return self.code()
        self.post_json(RAG + "/query",
                       {"collection": self.config.rag_collection,
                        "query": random.choice(["How long are backups kept?", "What does the gateway do?"])},
                       name="rag query", expect="answer")

"""A mixed workload through one user: code completions, streamed chat and, from phase 2
(``LOAD_PHASE``), embeddings and RAG queries, weighted roughly like an assistant's day.

By hand::

    locust -f load/mixed.py --host http://127.0.0.1:8000
"""

from __future__ import annotations

import os
import random

from _common import MAX_TOKENS, checked_post, service_url, stream_sse
from locust import FastHttpUser, constant, task

PHASE = int(os.environ.get("LOAD_PHASE", "1") or 1)
EMBEDDING, RAG = service_url("embedding"), service_url("rag")


class Mixed(FastHttpUser):
    host = service_url("gateway")
    wait_time = constant(0)
    network_timeout = 300.0

    @task(3)
    def code(self) -> None:
        checked_post(self, "/v1/completions", {"model": "code", "prompt": "def add(a, b):",
                                               "max_tokens": MAX_TOKENS}, name="code completion",
                     expect="choices")

    @task(2)
    def chat(self) -> None:
        stream_sse(self, "/v1/chat/completions",
                   {"model": "chat", "stream": True, "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": "Say hello in French."}]}, name="chat stream")

    @task(2)
    def embed(self) -> None:
        if PHASE < 2:
            return self.chat()
        checked_post(self, EMBEDDING + "/embed", {"texts": ["a", "b"]}, name="embed",
                     expect="embeddings")

    @task(1)
    def rag(self) -> None:
        if PHASE < 2:
            return self.code()
        checked_post(self, RAG + "/query",
                     {"collection": os.environ.get("LOAD_RAG_COLLECTION", "load"),
                      "query": random.choice(["How long are backups kept?", "What does the gateway do?"])},
                     name="rag query", expect="answer")

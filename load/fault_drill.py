"""The fault drill's light background load: non-streamed chat and code through the gateway, and by
phase (``LOAD_PHASE``) embeddings through the gateway and RAG retrieval (2), tools ``read_file`` and
``memory_search`` (3).

Each user starts a request every ``LOAD_PACE_S`` seconds, so the load stays light while services
restart on the same cores. The harness ends the run through the stop file. A request the gateway
served from the other model is reported as ``NAME (fallback)``, which is how the drill tells
failover from luck. Non-streamed on purpose: the gateway can still fail over a request whose
upstream dies mid-answer, while a stream already relaying bytes cannot be moved.

By hand::

    LOAD_PHASE=1 locust -f load/fault_drill.py --host http://127.0.0.1:8000 -u 3 -r 3 -t 60s
"""

from __future__ import annotations

import os

from _common import SuiteUser, _status_problem, service_url
from locust import constant_pacing

PHASE = int(os.environ.get("LOAD_PHASE", "1") or 1)
PACE_S = float(os.environ.get("LOAD_PACE_S", "1.0") or 1.0)
EMBEDDING_MODEL = os.environ.get("LOAD_EMBEDDING_MODEL", "all-MiniLM-L6-v2")
RAG, TOOLS = service_url("rag"), service_url("tools")


def chat(user: FaultDrill) -> None:
    user.post("/v1/chat/completions", {"model": user.config.chat_model, "max_tokens": user.config.max_tokens,
                                       "messages": [{"role": "user", "content": "Say hello."}]}, "chat")


def code(user: FaultDrill) -> None:
    user.post("/v1/completions", {"model": user.config.code_model, "prompt": "def add(a, b):",
                                  "max_tokens": user.config.max_tokens}, "code")


def embeddings(user: FaultDrill) -> None:
    user.post("/v1/embeddings", {"model": EMBEDDING_MODEL, "input": ["restart", "recovery"]}, "embeddings")


def rag(user: FaultDrill) -> None:  # retrieval only: the answer path is chat's, and 128 tokens are not light
    user.post(RAG + "/query", {"collection": user.config.rag_collection, "query": "How long are backups kept?",
                               "answer": False}, "rag query")


def read_file(user: FaultDrill) -> None:
    user.post(TOOLS + "/tools/read_file", {"path": user.config.tools_file}, "tools read_file")


def memory_search(user: FaultDrill) -> None:
    user.post(TOOLS + "/tools/memory_search", {"query": "drill"}, "tools memory_search")


TASKS = {chat: 3, code: 3}
if PHASE >= 2:
    TASKS.update({embeddings: 2, rag: 1})
if PHASE >= 3:
    TASKS.update({read_file: 2, memory_search: 1})


class FaultDrill(SuiteUser):
    service = "gateway"
    wait_time = constant_pacing(PACE_S)
    network_timeout = 60.0
    connection_timeout = 5.0
    tasks = TASKS

    def post(self, url: str, body: dict, name: str) -> None:
        """POST JSON with the run's key; no answer or a 4xx/5xx is a failure; an answer the gateway
        took from the other model is reported as ``NAME (fallback)``."""
        with self.client.post(url, json=body, catch_response=True, name=name, context=self.load.ticket(name),
                              headers=self.auth_headers()) as resp:
            problem = _status_problem(resp)
            if problem:
                resp.failure(problem)
            elif resp.headers.get("x-suite-fallback-from") or resp.headers.get("x-litellm-attempted-fallbacks",
                                                                               "0") not in ("", "0"):
                resp.request_meta["name"] = f"{name} (fallback)"

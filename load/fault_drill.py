"""The fault drill's light background load: non-streamed chat and code through the gateway, and by
phase (``LOAD_PHASE``) embeddings through the gateway and RAG queries (2), tools ``read_file`` and
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

from _common import API_KEY, MAX_TOKENS, service_url, take
from locust import FastHttpUser, constant_pacing

PHASE = int(os.environ.get("LOAD_PHASE", "1") or 1)
PACE_S = float(os.environ.get("LOAD_PACE_S", "1.0") or 1.0)
EMBEDDING_MODEL = os.environ.get("LOAD_EMBEDDING_MODEL", "all-MiniLM-L6-v2")
COLLECTION = os.environ.get("LOAD_RAG_COLLECTION", "fault-drill")
TOOLS_FILE = os.environ.get("LOAD_TOOLS_FILE", "README.md")
RAG, TOOLS = service_url("rag"), service_url("tools")
AUTH = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}


def post(user, url: str, body: dict, name: str, headers: dict | None = None) -> None:
    """POST JSON; a 4xx/5xx or a transport error is a failure; a fallback answer is renamed."""
    with user.client.post(url, json=body, catch_response=True, name=name, context=take(),
                          headers={**AUTH, **(headers or {})}) as resp:
        if resp.status_code >= 400 or resp.status_code == 0:
            resp.failure(f"HTTP {resp.status_code}: {(resp.text or '')[:200]}")
        elif resp.headers.get("x-suite-fallback-from"):
            resp.request_meta["name"] = f"{name} (fallback)"


def chat(user) -> None:
    post(user, "/v1/chat/completions", {"model": "chat", "max_tokens": MAX_TOKENS,
                                        "messages": [{"role": "user", "content": "Say hello."}]}, "chat")


def code(user) -> None:
    post(user, "/v1/completions", {"model": "code", "prompt": "def add(a, b):", "max_tokens": MAX_TOKENS},
         "code")


def embeddings(user) -> None:
    post(user, "/v1/embeddings", {"model": EMBEDDING_MODEL, "input": ["restart", "recovery"]}, "embeddings")


def rag(user) -> None:
    post(user, RAG + "/query", {"collection": COLLECTION, "query": "How long are backups kept?"}, "rag query")


def read_file(user) -> None:
    post(user, TOOLS + "/tools/read_file", {"path": TOOLS_FILE}, "tools read_file")


def memory_search(user) -> None:
    post(user, TOOLS + "/tools/memory_search", {"query": "drill"}, "tools memory_search")


TASKS = {chat: 3, code: 3}
if PHASE >= 2:
    TASKS.update({embeddings: 2, rag: 1})
if PHASE >= 3:
    TASKS.update({read_file: 2, memory_search: 1})


class FaultDrill(FastHttpUser):
    host = service_url("gateway")
    wait_time = constant_pacing(PACE_S)
    network_timeout = 60.0
    connection_timeout = 5.0
    tasks = TASKS

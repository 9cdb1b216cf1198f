"""The pool drill's load: completions of one model alias through the gateway, each sample named by the
replica that served it (``chat @chat-b``, from the gateway's ``x-suite-replica`` header), so the drill
can count the traffic each replica took second by second while one of them is killed. A failed
request keeps the plain alias as its name.

Non-streamed, as the fault drill's: a replica that dies under a request is replayed by the gateway on
another (a stream is moved only before its first event; after it the client gets an error event).

Environment: ``LOAD_POOL_ALIAS`` (``chat``; ``code`` asks ``/v1/completions``), ``LOAD_PACE_S``
(seconds between one user's request starts), ``LOAD_MAX_TOKENS``, and ``_common``'s.

By hand::

    LOAD_POOL_ALIAS=chat locust -f load/pool_drill.py --host http://127.0.0.1:8000 -u 4 -r 4 -t 60s
"""

from __future__ import annotations

import os

from _common import SuiteUser, _status_problem
from locust import constant_pacing, task

ALIAS = os.environ.get("LOAD_POOL_ALIAS", "chat") or "chat"
PACE_S = float(os.environ.get("LOAD_PACE_S", "0.5") or 0.5)


class PoolDrill(SuiteUser):
    service = "gateway"
    wait_time = constant_pacing(PACE_S)
    network_timeout = 60.0
    connection_timeout = 5.0

    @task
    def complete(self) -> None:
        if ALIAS == "code":
            path, body = "/v1/completions", {"model": ALIAS, "prompt": "def add(a, b):"}
        else:
            path, body = "/v1/chat/completions", {"model": ALIAS, "messages": [{"role": "user", "content": "Say hello."}]}
        body["max_tokens"] = self.config.max_tokens
        with self.client.post(path, json=body, catch_response=True, name=ALIAS, context=self.load.ticket(),
                              headers=self.auth_headers()) as resp:
            problem = _status_problem(resp)
            if problem:
                resp.failure(problem)
            else:
                resp.request_meta["name"] = f"{ALIAS} @{resp.headers.get('x-suite-replica', '?')}"

"""RAG query: ``POST /query`` (retrieve, then answer through the gateway).

The collection is ``LOAD_RAG_COLLECTION`` (default ``load``); on start each user indexes one small
document into it so a query has something to find. By hand::

    locust -f load/rag_query.py --host http://127.0.0.1:8002
"""

from __future__ import annotations

import os
import random

from _common import checked_post, service_url
from locust import FastHttpUser, constant, task

COLLECTION = os.environ.get("LOAD_RAG_COLLECTION", "load")
DOCUMENT = ("The suite keeps memory backups for seven days. Qdrant snapshots are taken before every "
            "release. The gateway answers chat and code requests from local models.")
QUERIES = ["How long are memory backups kept?", "When are Qdrant snapshots taken?",
           "백업은 얼마나 보관됩니까?"]


class RagQuery(FastHttpUser):
    host = service_url("rag")
    wait_time = constant(0)
    network_timeout = 300.0

    def on_start(self) -> None:
        # not counted in the budget and not a sample worth judging: preparation only
        self.client.post("/index", json={"collection": COLLECTION,
                                         "documents": [{"id": "load-doc", "text": DOCUMENT}]},
                         name="index (setup)")

    @task
    def query(self) -> None:
        checked_post(self, "/query", {"collection": COLLECTION, "query": random.choice(QUERIES)},
                     name="rag query", expect="answer")

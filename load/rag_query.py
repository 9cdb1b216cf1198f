"""RAG query: ``POST /query`` (retrieve, then answer through the gateway).

The collection is ``LOAD_RAG_COLLECTION`` (default ``load``); on start each user indexes one small
document into it so a query has something to find. By hand::

    locust -f load/rag_query.py --host http://127.0.0.1:8002
"""

from __future__ import annotations

import random

from _common import SuiteUser
from locust import task

DOCUMENT = ("The suite keeps memory backups for seven days. Qdrant snapshots are taken before every "
            "release. The gateway answers chat and code requests from local models.")
QUERIES = ["How long are memory backups kept?", "When are Qdrant snapshots taken?",
           "백업은 얼마나 보관됩니까?"]


class RagQuery(SuiteUser):
    service = "rag"

    def on_start(self) -> None:
        # not counted in the budget and not a sample worth judging: preparation only
        self.client.post("/index", json={"collection": self.config.rag_collection,
                                         "documents": [{"id": "load-doc", "text": DOCUMENT}]},
                         name="index (setup)", headers=self.auth_headers())

    @task
    def query(self) -> None:
        self.post_json("/query", {"collection": self.config.rag_collection, "query": random.choice(QUERIES)},
                       name="rag query", expect="answer")

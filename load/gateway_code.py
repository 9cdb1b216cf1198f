"""Gateway code completion: ``POST /v1/completions`` (model ``code``), not streamed.

By hand::

    locust -f load/gateway_code.py --host http://127.0.0.1:8000
    locust -f load/gateway_code.py --headless -u 2 -r 1 -t 60s
"""

from __future__ import annotations

import random

from _common import SuiteUser
from locust import task

PROMPTS = [
    "def add(a, b):",
    "def is_even(n):",
    "# Return the largest item of a list\ndef largest(items):",
    "class Stack:\n    def push(self, item):",
]


class GatewayCode(SuiteUser):
    service = "gateway"

    @task
    def complete(self) -> None:
        body = {"model": self.config.code_model, "prompt": random.choice(PROMPTS), "max_tokens": self.config.max_tokens,
                "temperature": 0.2}
        self.post_json("/v1/completions", body, name="code completion", expect="choices")

"""Gateway chat, streamed: ``POST /v1/chat/completions`` with ``stream: true`` (model ``chat``).

Each request is timed to its last token; time to first token, inter-token latency and output
tokens per second become rows of their own. By hand::

    locust -f load/gateway_chat_stream.py --host http://127.0.0.1:8000          # web UI
    locust -f load/gateway_chat_stream.py --headless -u 2 -r 1 -t 60s
"""

from __future__ import annotations

import random

from _common import SuiteUser
from locust import task

PROMPTS = [
    "Name three colours of the rainbow.",
    "What is the capital of France?",
    "Give one tip for writing clear code.",
    "Say hello in Spanish.",
]


class GatewayChatStream(SuiteUser):
    service = "gateway"

    @task
    def chat(self) -> None:
        body = {"model": self.config.chat_model, "stream": True, "max_tokens": self.config.max_tokens, "temperature": 0.7,
                "messages": [{"role": "user", "content": random.choice(PROMPTS)}]}
        self.post_stream("/v1/chat/completions", body, name="chat stream")

"""The RAG service's HTTP dependencies (embedding service, gateway) and their last known state.

A dependency that cannot be reached, times out or answers 5xx raises ``DependencyDown``, which the
app turns into 503 + Retry-After; a dependency's 4xx is a bug on our side and becomes 502.

The answer prompt is budgeted in tokens of the chat model: ``count_tokens`` asks the chat inference
service's tokenizer (``/extras/tokenize/count``); when it cannot, UTF-8 bytes stand in (an upper
bound for byte-fallback tokenizers such as Gemma's and Llama's), so the prompt still fits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from suite.auth.layer import forward_auth
from suite.rag.prompt import PromptTooLong, fit_messages
from suite.settings import Settings
from suite.vectorstore import Hit
from suite.web import ApiError

log = logging.getLogger(__name__)

TEMPLATE_MARGIN = 16  # tokens the chat template adds around the user message (Gemma: ~10)
TOKENIZE_TIMEOUT_S = 10.0


class DependencyDown(Exception):
    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service} unavailable: {reason}")
        self.service, self.reason = service, reason


class DependencyError(Exception):
    """A dependency refused our request (4xx): reported as 502, not as our client's fault."""

    def __init__(self, service: str, status: int, message: str) -> None:
        super().__init__(f"{service} answered HTTP {status}: {message}")
        self.service, self.status, self.message = service, status, message


@dataclass
class DepState:
    url: str
    state: str = "unknown"  # up | down | unknown
    detail: str = ""
    checked_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "state": self.state, "detail": self.detail,
                "checked_s_ago": round(time.time() - self.checked_at, 1) if self.checked_at else None}


@dataclass
class Embedded:
    vectors: list[list[float]]
    model: str
    dimension: int


@dataclass
class Answer:
    text: str
    model: str
    upstream: str | None
    fallback_from: str | None
    usage: dict[str, Any] = field(default_factory=dict)


def _error_message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])[:300]
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


class Dependencies:
    """Calls to the embedding service and the gateway over one shared ``httpx.AsyncClient``."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.state = {"embedding": DepState(settings.url("embedding")),
                      "gateway": DepState(settings.url("gateway"))}

    def _mark(self, service: str, up: bool, detail: str = "") -> None:
        st = self.state[service]
        st.state, st.detail, st.checked_at = ("up" if up else "down"), detail, time.time()

    async def _post(self, service: str, path: str, body: dict, timeout_s: float) -> httpx.Response:
        try:
            # the caller's own key: embedding and gateway check its role again (no confused deputy)
            resp = await self.client.post(self.state[service].url + path, json=body, timeout=timeout_s,
                                          headers=forward_auth())
        except httpx.TransportError as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._mark(service, False, reason)
            raise DependencyDown(service, reason) from None
        if resp.status_code >= 500:
            reason = f"HTTP {resp.status_code}: {_error_message(resp)}"
            self._mark(service, False, reason)
            raise DependencyDown(service, reason)
        self._mark(service, True)
        if resp.status_code >= 400:
            raise DependencyError(service, resp.status_code, _error_message(resp))
        return resp

    async def embed(self, texts: list[str]) -> Embedded:
        """Vectors for ``texts``, sent in batches the embedding service accepts whole."""
        cfg = self.settings.rag
        vectors: list[list[float]] = []
        model, dim = "", 0
        for start in range(0, len(texts), cfg.embed_batch):
            resp = await self._post("embedding", "/embed", {"texts": texts[start:start + cfg.embed_batch]},
                                    cfg.embedding_timeout_s)
            data = resp.json()
            vectors.extend(data["embeddings"])
            model, dim = data["model"], int(data["dimension"])
        return Embedded(vectors, model, dim)

    async def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` for the chat model; UTF-8 bytes (+1) when its tokenizer cannot say."""
        try:
            resp = await self.client.post(self.settings.url("inference-chat") + "/extras/tokenize/count",
                                          json={"input": text}, timeout=TOKENIZE_TIMEOUT_S,
                                          headers=forward_auth())  # the caller's key, as for the answer
            if resp.status_code == 200:
                return int(resp.json()["count"])
            reason = f"HTTP {resp.status_code}"
        except (httpx.TransportError, ValueError, KeyError, TypeError) as exc:
            reason = type(exc).__name__
        log.warning("chat tokenizer unavailable (%s): counting UTF-8 bytes instead", reason)
        return len(text.encode("utf-8")) + 1

    def answer_budget(self) -> tuple[int, int]:
        """(prompt tokens, answer tokens) that together fit the chat model's context."""
        n_ctx = self.settings.inference.chat.n_ctx
        answer_tokens = min(self.settings.rag.answer_max_tokens, n_ctx // 2)
        return n_ctx - answer_tokens - TEMPLATE_MARGIN, answer_tokens

    async def answer(self, question: str, hits: list[Hit]) -> Answer:
        """The chat model's answer from the retrieved context, through the gateway; the prompt is
        cut to fit the chat model's context (context chunks first, then the question)."""
        cfg = self.settings.rag
        budget, answer_tokens = self.answer_budget()
        try:
            messages = await fit_messages(question, hits, cfg.context_chars, budget, self.count_tokens)
        except PromptTooLong as exc:
            raise ApiError(400, f"cannot answer: {exc}", code="prompt_too_long") from None
        body = {"model": "chat", "messages": messages, "max_tokens": answer_tokens, "temperature": 0.0}
        resp = await self._post("gateway", "/v1/chat/completions", body, cfg.answer_timeout_s)
        data = resp.json()
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise DependencyError("gateway", resp.status_code, "answer without choices[0].message") from None
        return Answer(text=text.strip(), model=data.get("model", "chat"),
                      upstream=resp.headers.get("x-suite-upstream"),
                      fallback_from=resp.headers.get("x-suite-fallback-from"), usage=data.get("usage") or {})

    async def embedding_ready(self, timeout_s: float) -> dict[str, Any]:
        """The embedding service's own readiness (it embeds one string): open, so a probe needs no key."""
        try:
            resp = await self.client.get(self.state["embedding"].url + "/ready", timeout=timeout_s)
        except httpx.TransportError as exc:
            self._mark("embedding", False, type(exc).__name__)
            raise DependencyDown("embedding", type(exc).__name__) from None
        if resp.status_code != 200:
            self._mark("embedding", False, f"HTTP {resp.status_code}")
            raise DependencyDown("embedding", f"/ready HTTP {resp.status_code}: {_error_message(resp)}")
        self._mark("embedding", True)
        return resp.json()

    async def refresh(self, timeout_s: float = 2.0) -> None:
        """Probe each dependency's /health (liveness only) and remember the outcome."""
        async def one(service: str) -> None:
            try:
                resp = await self.client.get(self.state[service].url + "/health", timeout=timeout_s)
                self._mark(service, resp.status_code == 200,
                           "" if resp.status_code == 200 else f"HTTP {resp.status_code}")
            except httpx.TransportError as exc:
                self._mark(service, False, type(exc).__name__)

        await asyncio.gather(*(one(s) for s in self.state))

    async def watch(self, every_s: float = 5.0) -> None:
        """Keep the states fresh for /health, which must answer without waiting on anyone."""
        while True:
            try:
                await self.refresh()
            except Exception:  # a probe bug must never kill the service
                log.exception("dependency probe failed")
            await asyncio.sleep(every_s)

"""Micro-batching: concurrent requests are collected for a few ms (or until a batch fills) and
encoded together, because one batched ``encode`` costs far less than the same texts one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


class Encoder(Protocol):
    name: str
    dimension: int

    def encode(self, texts: list[str], batch_size: int = ...) -> np.ndarray: ...


@dataclass
class Encoded:
    """One request's share of a batch, and which encoder produced it (a reload may swap it)."""

    vectors: np.ndarray
    encoder: Any
    batch_texts: int  # size of the batch the request rode in


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    """Queue requests, encode them in batches in a worker thread, one batch at a time.

    ``current`` returns the encoder to use; it is read when a batch starts, so a model swap never
    affects a batch already running. Observers get ``(requests, texts)`` of every batch.
    """

    def __init__(self, current: Callable[[], Encoder], wait_ms: float = 5.0, max_batch: int = 64,
                 on_batch: Callable[[int, int], None] | None = None) -> None:
        self._current = current
        self.wait_s = wait_ms / 1000.0
        self.max_batch = max_batch
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task | None = None
        self.batches = 0
        self.texts = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="embedding-batcher")

    async def close(self) -> None:
        """Stop the worker; requests still queued fail instead of hanging."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(RuntimeError("embedding service is shutting down"))

    async def submit(self, texts: list[str]) -> Encoded:
        """Encode ``texts`` as part of whatever batch forms around them."""
        if not texts:
            enc = self._current()
            return Encoded(np.zeros((0, enc.dimension), dtype=np.float32), enc, 0)
        if self._task is None or self._task.done():
            raise RuntimeError("batcher is not running")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(list(texts), future))
        return await future

    async def _collect(self) -> list[_Pending]:
        items = [await self._queue.get()]
        count = len(items[0].texts)
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while count < self.max_batch:
            if not self._queue.empty():  # already waiting: take it without waiting for the window
                item = self._queue.get_nowait()
            else:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
            items.append(item)
            count += len(item.texts)
        return items

    async def _run(self) -> None:
        while True:
            items = await self._collect()
            items = [i for i in items if not i.future.done()]  # clients that gave up
            if not items:
                continue
            texts = [t for i in items for t in i.texts]
            encoder = self._current()
            try:
                vectors = await asyncio.to_thread(encoder.encode, texts, self.max_batch)
            except asyncio.CancelledError:
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(RuntimeError("embedding service is shutting down"))
                raise
            except Exception as exc:  # one bad batch fails its requests, never the worker
                log.exception("encode failed for a batch of %d texts", len(texts))
                for i in items:
                    if not i.future.done():
                        i.future.set_exception(exc)
                continue
            self.batches += 1
            self.texts += len(texts)
            if self._on_batch:
                self._on_batch(len(items), len(texts))
            offset = 0
            for i in items:
                n = len(i.texts)
                if not i.future.done():
                    i.future.set_result(Encoded(vectors[offset:offset + n], encoder, len(texts)))
                offset += n

"""Unit tests of the embedding service's parts that need no model: limits, batching, OpenAI shapes."""

from __future__ import annotations

import asyncio
import base64
import threading

import numpy as np
import pytest

from suite.embedding.batcher import MicroBatcher
from suite.embedding.limits import apply_limits
from suite.embedding.service import as_openai, openai_texts
from suite.web import ApiError


# -- truncation ---------------------------------------------------------------------------------
def test_limits_keep_short_input_untouched():
    texts, report = apply_limits(["a", "bb"], max_texts=1024, max_chars=8000)
    assert texts == ["a", "bb"]
    assert not report.truncated
    assert report.to_dict()["texts_received"] == 2


def test_limits_drop_texts_beyond_max_and_report():
    texts, report = apply_limits([str(i) for i in range(1030)], max_texts=1024, max_chars=8000)
    assert len(texts) == 1024 and texts[-1] == "1023"
    assert report.truncated and report.texts_dropped == 6 and report.cut_texts == []


def test_limits_cut_long_texts_and_report_which():
    texts, report = apply_limits(["short", "x" * 8001, "y" * 8000], max_texts=1024, max_chars=8000)
    assert [len(t) for t in texts] == [5, 8000, 8000]
    assert report.cut_texts == [1]
    assert report.truncated


def test_limits_empty_list():
    texts, report = apply_limits([], 1024, 8000)
    assert texts == [] and not report.truncated


# -- micro-batching -----------------------------------------------------------------------------
class FakeEncoder:
    """Vectors that encode the text length, and a record of every batch it was given."""

    def __init__(self, name: str = "fake", dimension: int = 3, delay_s: float = 0.02) -> None:
        self.name, self.dimension, self.delay_s = name, dimension, delay_s
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()

    def encode(self, texts, batch_size=64):
        import time

        self.threads.add(threading.get_ident())
        time.sleep(self.delay_s)
        self.batches.append(list(texts))
        return np.array([[len(t), i, 1.0] for i, t in enumerate(texts)], dtype=np.float32)


def run(coro):
    return asyncio.run(coro)


def test_concurrent_single_requests_share_batches():
    enc = FakeEncoder()

    async def main():
        b = MicroBatcher(lambda: enc, wait_ms=20, max_batch=64)
        b.start()
        outs = await asyncio.gather(*(b.submit(["t" * (i + 1)]) for i in range(16)))
        await b.close()
        return outs

    outs = run(main())
    assert len(enc.batches) < 16  # batched, not one encode per request
    assert sum(len(batch) for batch in enc.batches) == 16
    # every request gets back the vector of its own text
    assert [int(o.vectors[0][0]) for o in outs] == list(range(1, 17))
    assert all(o.vectors.shape == (1, 3) for o in outs)


def test_batch_closes_when_full_without_waiting_for_the_window():
    enc = FakeEncoder(delay_s=0.0)

    async def main():
        b = MicroBatcher(lambda: enc, wait_ms=5000, max_batch=4)
        b.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(*(b.submit([f"x{i}"]) for i in range(8)))
        took = loop.time() - t0
        await b.close()
        return took

    took = run(main())
    assert took < 2.0  # two full batches, not two 5 s windows
    assert [len(x) for x in enc.batches] == [4, 4]


def test_multi_text_requests_are_split_back_in_order():
    enc = FakeEncoder()

    async def main():
        b = MicroBatcher(lambda: enc, wait_ms=20, max_batch=64)
        b.start()
        a, c = await asyncio.gather(b.submit(["a", "bb", "ccc"]), b.submit(["dddd", "eeeee"]))
        await b.close()
        return a, c

    a, c = run(main())
    assert a.vectors[:, 0].tolist() == [1, 2, 3]
    assert c.vectors[:, 0].tolist() == [4, 5]


def test_encode_runs_off_the_event_loop_thread():
    enc = FakeEncoder()

    async def main():
        b = MicroBatcher(lambda: enc, wait_ms=1)
        b.start()
        await b.submit(["x"])
        await b.close()
        return threading.get_ident()

    loop_thread = run(main())
    assert enc.threads and loop_thread not in enc.threads


def test_empty_request_does_not_touch_the_encoder():
    enc = FakeEncoder()

    async def main():
        b = MicroBatcher(lambda: enc)
        b.start()
        out = await b.submit([])
        await b.close()
        return out

    out = run(main())
    assert out.vectors.shape == (0, 3) and enc.batches == []


def test_a_failing_batch_fails_its_requests_and_the_worker_survives():
    class Flaky(FakeEncoder):
        def encode(self, texts, batch_size=64):
            if "boom" in texts:
                raise ValueError("boom")
            return super().encode(texts, batch_size)

    enc = Flaky()

    async def main():
        b = MicroBatcher(lambda: enc, wait_ms=1)
        b.start()
        with pytest.raises(ValueError):
            await b.submit(["boom"])
        ok = await b.submit(["fine"])
        await b.close()
        return ok

    assert run(main()).vectors.shape == (1, 3)


def test_swapping_the_encoder_affects_only_later_batches():
    old, new = FakeEncoder("old", delay_s=0.2), FakeEncoder("new", delay_s=0.0)
    current = {"enc": old}

    async def main():
        b = MicroBatcher(lambda: current["enc"], wait_ms=1)
        b.start()
        first = asyncio.create_task(b.submit(["in flight"]))
        await asyncio.sleep(0.05)  # the first batch is encoding with the old model
        current["enc"] = new
        later = await b.submit(["after swap"])
        earlier = await first
        await b.close()
        return earlier, later

    earlier, later = run(main())
    assert earlier.encoder.name == "old" and later.encoder.name == "new"


def test_close_fails_queued_requests_instead_of_hanging():
    enc = FakeEncoder(delay_s=0.3)

    async def main():
        b = MicroBatcher(lambda: enc, wait_ms=0, max_batch=1)
        b.start()
        tasks = [asyncio.create_task(b.submit([f"t{i}"])) for i in range(3)]
        await asyncio.sleep(0.05)
        await b.close()
        return await asyncio.gather(*tasks, return_exceptions=True)

    outs = run(main())
    assert any(isinstance(o, RuntimeError) for o in outs)


# -- OpenAI shapes ------------------------------------------------------------------------------
def test_openai_input_forms():
    assert openai_texts("one") == ["one"]
    assert openai_texts(["a", "b"]) == ["a", "b"]
    with pytest.raises(ApiError) as err:
        openai_texts([[1, 2, 3]])
    assert err.value.status == 400


def test_base64_encoding_round_trips_float32():
    vec = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    decoded = np.frombuffer(base64.b64decode(as_openai(vec, "base64")), dtype="<f4")
    assert decoded.tolist() == [0.5, -1.25, 3.0]
    assert as_openai(vec, "float") == [0.5, -1.25, 3.0]

"""Pieces of the batched service's streaming path that need no model: SSE templates, the engine -> loop hand-off."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from suite.inference import openai_surface as oai
from suite.inference.engine import AsyncSink, Event

MODELS = ["chat", '/models/"odd\x00text\x00 name.gguf', "modèle"]
TEXTS = [" hello", '"quoted" \\ back\nslash', "\x00text\x00", "é€😀", "", "\u2028 \t"]


@pytest.mark.parametrize("chat", [False, True])
@pytest.mark.parametrize("model", MODELS)
def test_sse_template_writes_what_dumping_the_chunk_writes(chat, model):
    """The per-token template is byte for byte llama-cpp-python's chunk (chat converter included),
    whatever the client named the model (even the template's own placeholder)."""
    shape = oai.CompletionShape(model, chat=chat)
    for text in TEXTS:
        chunks = oai.chat_chunks(shape.chunk(text), first=False) if chat else [shape.chunk(text)]
        assert shape.sse_text(text) == "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
    first = shape.sse("hi", None, first=True)
    if chat:  # the first chunk of a chat stream is preceded by its role delta
        role, content = (json.loads(line[6:]) for line in first.strip().split("\n\n"))
        assert role["choices"][0]["delta"] == {"role": "assistant"}
        assert content["choices"][0]["delta"] == {"content": "hi"}
    else:
        assert first == shape.sse_text("hi")


def test_a_burst_from_another_thread_arrives_whole_and_in_order():
    """The engine posts a step's events from its thread; the consumer gets all of them, in order, and one
    delivery on the loop took them (a burst wakes the loop once)."""

    async def main():
        sinks = [AsyncSink() for _ in range(3)]
        loop = asyncio.get_running_loop()
        deliveries = []
        original = loop.call_soon_threadsafe

        def counting(callback, *args):
            deliveries.append(callback)
            return original(callback, *args)

        loop.call_soon_threadsafe = counting
        burst = threading.Event()

        def engine():
            for step in range(4):
                for i, sink in enumerate(sinks):
                    sink(Event(text=f"{i}:{step} "))
            for sink in sinks:
                sink(Event(finish_reason="length"))
            burst.set()

        # the loop cannot run the delivery before the burst is over: it is blocked here
        threading.Thread(target=engine).start()
        burst.wait(10)
        texts = []
        for sink in sinks:
            events = []
            while not events or not events[-1].final:
                events += await sink.get_all(timeout=10)
            texts.append("".join(e.text for e in events))
        return texts, len(deliveries)

    texts, deliveries = asyncio.run(main())
    assert texts == [" ".join(f"{i}:{s}" for s in range(4)) + " " for i in range(3)]
    assert deliveries == 1


def test_sink_get_times_out_and_keeps_later_events():
    async def main():
        sink = AsyncSink()
        with pytest.raises(TimeoutError):
            await sink.get(timeout=0.05)
        threading.Thread(target=sink, args=(Event(text="late"),)).start()
        return await sink.get(timeout=10)

    assert asyncio.run(main()).text == "late"


@pytest.mark.parametrize("env, expected", [({}, "4321"), ({"GOMP_SPINCOUNT": "777"}, "777")])
def test_the_service_hands_its_omp_spincount_to_libgomp(tmp_path, gemma_path, env, expected):
    """``inference.omp_spincount`` is in the environment before llama.cpp loads libgomp (which reads
    it once, at load); a GOMP_SPINCOUNT already in the environment wins. libgomp itself says which
    value it took (OMP_DISPLAY_ENV=VERBOSE prints its settings when it loads)."""
    import os
    import subprocess
    import sys
    import time

    from suite.testing import stack_settings

    settings = stack_settings(tmp_path, gemma_path, inference={"omp_spincount": 4321})
    child_env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    proc = subprocess.Popen([sys.executable, "-m", "suite.serve", "inference-chat", "--settings-file",
                             str(settings.dump_file(tmp_path / "settings.json"))],
                            env={**child_env, "OMP_DISPLAY_ENV": "VERBOSE", **env},
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        deadline, seen = time.monotonic() + 120, ""
        while time.monotonic() < deadline and "GOMP_SPINCOUNT" not in seen:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            seen = line if "GOMP_SPINCOUNT" in line else seen
        assert seen.split("=")[1].strip().strip("'") == expected
    finally:
        proc.kill()
        proc.wait(timeout=30)

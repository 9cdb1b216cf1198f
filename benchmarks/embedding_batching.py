"""What micro-batching is worth: single-text requests under concurrency vs batched and sequential encodes.

Measures, on the same texts and the same MiniLM-L6 model (CPU):

1. sequential single-text ``encode`` calls, in process (the cost without any batching);
2. one batched ``encode`` of all texts, in process (the ceiling);
3. 16 concurrent clients, one text per HTTP request, against the real embedding service with
   micro-batching on (settings defaults);
4. the same 16 clients against a service with micro-batching off (``max_batch=1``).

Usage: ``.venv/bin/python benchmarks/embedding_batching.py [--texts 128] [--clients 16] [--repeat 3]``.
Prints a Markdown table and the load average, and writes the raw figures as JSON (``--json``). Each
figure is the median of ``--repeat`` runs. The gain depends strongly on how busy the cores are (torch's
two intra-op threads cost the most on tiny single-text calls when other work competes for the CPU),
so always read a figure together with the load average printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx

from suite.embedding.app import create_app
from suite.embedding.model import default_model_path, load_model
from suite.fsio import write_json
from suite.settings import Settings
from suite.testing import ServerThread, auth

WORDS = ("the gateway routes each request to the chat or code model and falls back when an upstream "
         "fails while the embedding service turns text into vectors that the rag service stores in "
         "qdrant and searches by cosine similarity before answering through the gateway").split()


def make_texts(n: int) -> list[str]:
    """Deterministic sentences of 12 to 40 words (typical chunk-sized queries)."""
    out = []
    for i in range(n):
        length = 12 + (i * 7) % 29
        out.append(" ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(length)) + f" ({i})")
    return out


async def concurrent_single(url: str, texts: list[str], clients: int, headers: dict[str, str]) -> float:
    """Seconds for ``clients`` workers to embed every text, one text per request."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for t in texts:
        queue.put_nowait(t)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            text = queue.get_nowait()
            r = await client.post(url + "/embed", json={"texts": [text]})
            r.raise_for_status()

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=clients),
                                 headers=headers) as client:
        await client.post(url + "/embed", json={"texts": ["warm up"]})
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return time.perf_counter() - t0


def median_of(fn, repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def run(n_texts: int, clients: int, repeat: int) -> dict:
    load_before = os.getloadavg()
    texts = make_texts(n_texts)
    settings = Settings()
    model = load_model(default_model_path(settings), settings.embedding.device or "cpu")
    model.encode(["warm up"])

    def sequential() -> float:
        t0 = time.perf_counter()
        for t in texts:
            model.encode([t])
        return time.perf_counter() - t0

    def batched() -> float:
        t0 = time.perf_counter()
        model.encode(texts)
        return time.perf_counter() - t0

    figures = {"sequential single calls (in process)": median_of(sequential, repeat),
               "one batched encode (in process)": median_of(batched, repeat)}
    model = None  # free the in-process copy before the HTTP runs load their own
    on = settings.model_copy(deep=True)
    off = settings.model_copy(deep=True)
    off.embedding.max_batch, off.embedding.batch_wait_ms = 1, 0.0
    for label, cfg in ((f"{clients} concurrent single-text clients, micro-batching on (HTTP)", on),
                       (f"{clients} concurrent single-text clients, micro-batching off (HTTP)", off)):
        with ServerThread(create_app(cfg), deadline_s=120) as svc:
            # measured as served: every request carries a key and is checked
            figures[label] = median_of(lambda h=auth(cfg, "guest"), u=svc.url: asyncio.run(
                concurrent_single(u, texts, clients, h)), repeat)
    base = figures["sequential single calls (in process)"]
    rows = [{"mode": k, "seconds": round(v, 3), "texts_per_s": round(n_texts / v, 1),
             "speedup_vs_sequential": round(base / v, 2)} for k, v in figures.items()]
    return {"texts": n_texts, "clients": clients, "repeat": repeat,
            "batch_wait_ms": settings.embedding.batch_wait_ms, "max_batch": settings.embedding.max_batch,
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "load_average_before": [round(x, 1) for x in load_before],
            "load_average_after": [round(x, 1) for x in os.getloadavg()],
            "measured_at": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}


def markdown(result: dict) -> str:
    lines = ["| mode | seconds | texts/s | vs sequential |", "|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['mode']} | {r['seconds']:.2f} | {r['texts_per_s']:.1f} | "
                     f"{r['speedup_vs_sequential']:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    result = run(args.texts, args.clients, args.repeat)
    if args.json:
        write_json(args.json, result)
    sys.stdout.write(markdown(result) + "\n")
    sys.stdout.write(f"load average (1/5/15 min) before {result['load_average_before']}, "
                     f"after {result['load_average_after']}; {result['cpu_count']} CPUs\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

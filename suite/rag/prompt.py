"""The answer prompt: retrieved chunks as numbered context, then the question — fitted to a token budget.

``build_messages`` cuts the context to ``max_chars`` characters. ``fit_messages`` then makes sure the
prompt fits the chat model's context in *its* tokens (counted by a ``count`` callable, the chat
model's own tokenizer): when it does not, the context chunks are cut first (later chunks before
earlier ones), then the question; if not even the instruction fits, ``PromptTooLong`` says why.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from suite.vectorstore import Hit

INSTRUCTION = ("Answer the question briefly, in the language of the question, using only the context above. "
               "If the context does not contain the answer, say that you do not know.")
NO_CONTEXT = "(no context found)"
MIN_CHUNK_TOKENS = 16  # a cut chunk shorter than this is noise: drop it instead
CUT_TRIES = 4

Count = Callable[[str], Awaitable[int]]


class PromptTooLong(ValueError):
    """Not even the instruction and a shortened question fit the token budget."""


def render(question: str, context_lines: list[str]) -> str:
    context = "\n".join(context_lines) if context_lines else NO_CONTEXT
    # Context first: a small model that drifts into repeating its prompt then repeats the sources.
    return f"Context:\n{context}\n\nQuestion: {question}\n{INSTRUCTION}"


def context_lines(hits: list[Hit], max_chars: int) -> list[str]:
    """Numbered source lines, the hits' text cut to ``max_chars`` characters in all."""
    lines: list[str] = []
    used = 0
    for n, hit in enumerate(hits, 1):
        room = max_chars - used
        if room <= 0:
            break
        text = hit.text[:room]
        lines.append(f"[{n}] ({hit.doc_id}) {text}")
        used += len(text)
    return lines


def build_messages(question: str, hits: list[Hit], max_chars: int) -> list[dict[str, str]]:
    """Chat messages for the gateway; context is cut to ``max_chars`` so it fits a small model.

    One user message: the Gemma chat format has no system role.
    """
    return [{"role": "user", "content": render(question, context_lines(hits, max_chars))}]


async def fit_messages(question: str, hits: list[Hit], max_chars: int, budget: int,
                       count: Count) -> list[dict[str, str]]:
    """``build_messages``, fitted to ``budget`` tokens as ``count`` counts them."""
    lines = context_lines(hits, max_chars)
    if await count(render(question, lines)) <= budget:  # the usual case: one count
        return [{"role": "user", "content": render(question, lines)}]
    room = budget - await count(render("", []))
    if room <= 1:
        raise PromptTooLong(f"the answer prompt's instruction alone exceeds the budget of {budget} tokens")
    q_tokens = await count(question)
    if q_tokens >= room:  # no room for any context: the question itself is cut
        question = await cut_to(question, room - 1, count)
        return [{"role": "user", "content": render(question, [])}]
    room -= q_tokens
    kept: list[str] = []
    for line in lines:
        tokens = await count(line) + 1  # + the newline between lines
        if tokens > room:
            if room - 1 >= MIN_CHUNK_TOKENS:
                kept.append(await cut_to(line, room - 1, count))
            break
        kept.append(line)
        room -= tokens
    return [{"role": "user", "content": render(question, kept)}]


async def cut_to(text: str, tokens: int, count: Count) -> str:
    """The longest prefix of ``text`` (found in a few proportional steps) of at most ``tokens`` tokens."""
    n = await count(text)
    for _ in range(CUT_TRIES):
        if n <= tokens:
            return text
        text = text[:max(1, int(len(text) * tokens / n * 0.95))]
        n = await count(text)
    return text if n <= tokens else text[:tokens // 4]  # a token covers at least one byte

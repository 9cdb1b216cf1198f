"""The answer prompt: retrieved chunks as numbered context, then the question."""

from __future__ import annotations

from suite.vectorstore import Hit

INSTRUCTION = ("Answer the question briefly, in the language of the question, using only the context above. "
               "If the context does not contain the answer, say that you do not know.")


def build_messages(question: str, hits: list[Hit], max_chars: int) -> list[dict[str, str]]:
    """Chat messages for the gateway; context is cut to ``max_chars`` so it fits a small model.

    One user message: the Gemma chat format has no system role.
    """
    parts: list[str] = []
    used = 0
    for n, hit in enumerate(hits, 1):
        room = max_chars - used
        if room <= 0:
            break
        text = hit.text[:room]
        parts.append(f"[{n}] ({hit.doc_id}) {text}")
        used += len(text)
    context = "\n".join(parts) if parts else "(no context found)"
    # Context first: a small model that drifts into repeating its prompt then repeats the sources.
    content = f"Context:\n{context}\n\nQuestion: {question}\n{INSTRUCTION}"
    return [{"role": "user", "content": content}]

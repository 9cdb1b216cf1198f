"""Embedding smoke checks (phase 2): the native ``/embed`` contract and the OpenAI-shaped
``/v1/embeddings`` through the gateway."""

from __future__ import annotations

from harness.result import CheckResult
from harness.smoke.http import Check, run_key
from harness.vectors import cosine, norm
from suite import services
from suite.settings import Settings

PHASE = services.get("embedding").phase  # the stack phase that starts the embedding service
PAIR = ("A cat is sitting on the mat.", "A kitten sits on a rug.")


def check_embed(settings: Settings, phase: int, dimension: int = 384, min_cosine: float = 0.5) -> CheckResult:
    """``POST /embed`` of two related texts: shape, unit length and a cosine that says 'related'."""
    def body(c: Check) -> CheckResult:
        answer, ms, bad = c.post_ok(settings.url("embedding") + "/embed", {"texts": list(PAIR)},
                                    run_key(settings, "guest"))
        if bad:
            return bad
        vecs = answer["embeddings"]
        dims = [len(v) for v in vecs]
        norms = [norm(v) for v in vecs]
        cos = cosine(vecs[0], vecs[1]) if len(vecs) == 2 else float("nan")
        ok = dims == [dimension, dimension] and all(abs(n - 1) < 0.01 for n in norms) and min_cosine < cos < 0.999
        return c.result(ok, value=ms, unit="ms",
                        detail=f"dims {dims}, norms {[round(n, 4) for n in norms]}, cosine {cos:.3f}")

    return Check("smoke.embed.pair", "embed two texts: dimension and cosine",
                 f"2 x {dimension} dims, unit length, {min_cosine} < cosine < 0.999", PHASE).run(phase, body)


def check_openai_embeddings(settings: Settings, phase: int, dimension: int = 384) -> CheckResult:
    """``/v1/embeddings`` through the gateway, in the OpenAI shape (what the ``openai`` client sends)."""
    def body(c: Check) -> CheckResult:
        answer, ms, bad = c.post_ok(settings.url("gateway") + "/v1/embeddings",
                                    {"model": "embedding", "input": "안녕하세요"}, run_key(settings, "guest"))
        if bad:
            return bad
        dims = [len(d["embedding"]) for d in answer.get("data", [])]
        ok = answer.get("object") == "list" and dims == [dimension]
        return c.result(ok, value=ms, unit="ms",
                        detail=f"model {answer.get('model')}, dims {dims}, usage {answer.get('usage')}")

    return Check("smoke.embed.openai", "OpenAI /v1/embeddings through the gateway",
                 f"object=list, 1 x {dimension} dims", PHASE).run(phase, body)

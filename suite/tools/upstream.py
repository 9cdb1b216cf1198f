"""Tools that call other services over HTTP: memory, RAG and the models behind the gateway.

An upstream that is down answers 503 with Retry-After (never a 500); its own 4xx errors come back
with their status and message.
"""

from __future__ import annotations

from typing import Any

import httpx

from suite.auth.layer import forward_auth
from suite.tools.errors import ToolError
from suite.tools.spec import ToolContext, ToolSpec, integer, schema, string

PASS_THROUGH = {400, 401, 403, 404, 409, 413, 422, 429}


async def call(ctx: ToolContext, service: str, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One request to a suite service; transport failures and 5xx become a clear ToolError."""
    url = ctx.settings.url(service) + path
    try:
        # the caller's own key: memory, rag and the gateway check its role again (no confused deputy)
        resp = await ctx.http.request(method, url, timeout=ctx.settings.tools.upstream_timeout_s,
                                      headers=forward_auth(), **kwargs)
    except httpx.TimeoutException:
        raise ToolError(504, f"{service} did not answer within {ctx.settings.tools.upstream_timeout_s:g}s",
                        "upstream_timeout") from None
    except httpx.TransportError as exc:
        raise ToolError(503, f"{service} is unavailable at {ctx.settings.url(service)} "
                             f"({type(exc).__name__}); is it running (`suite status`)?",
                        "upstream_unavailable", headers={"Retry-After": "5"}) from None
    try:
        body = resp.json()
    except ValueError:
        body = {"text": resp.text[:2000]}
    if resp.status_code < 400:
        return body if isinstance(body, dict) else {"data": body}
    message = _message(body) or f"HTTP {resp.status_code}"
    if resp.status_code in PASS_THROUGH:
        raise ToolError(400 if resp.status_code == 422 else resp.status_code, f"{service}: {message}",
                        "upstream_rejected")
    if resp.status_code == 503:
        raise ToolError(503, f"{service} is not ready: {message}", "upstream_unavailable",
                        headers={"Retry-After": resp.headers.get("retry-after", "5")})
    raise ToolError(502, f"{service} failed: {message}", "upstream_error")


def _message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message", ""))[:500]
        if isinstance(err, str):
            return err[:500]
        if "detail" in body:
            return str(body["detail"])[:500]
    return ""


# -- memory ---------------------------------------------------------------------------------------
async def memory_save(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await call(ctx, "memory", "POST", "/v1/memory/notes",
                      json={"project": args.get("project", "default"), "text": args["text"],
                            "tags": args.get("tags", [])})


async def memory_search(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await call(ctx, "memory", "POST", "/v1/memory/search",
                      json={"query": args["query"], "project": args.get("project"), "tag": args.get("tag"),
                            "limit": args.get("limit", 10)})


async def memory_list_projects(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    return await call(ctx, "memory", "GET", "/v1/memory/projects")


# -- rag ------------------------------------------------------------------------------------------
async def rag_query(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    body = {k: args[k] for k in ("query", "collection", "top_k") if k in args}
    return await call(ctx, "rag", "POST", "/query", json=body)


async def rag_index(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    docs = [d if isinstance(d, dict) else {"text": d} for d in args["documents"]]
    body = {"documents": docs, **({"collection": args["collection"]} if "collection" in args else {})}
    return await call(ctx, "rag", "POST", "/index", json=body)


# -- models ---------------------------------------------------------------------------------------
async def chat(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    messages = args.get("messages") or [{"role": "user", "content": args.get("prompt", "")}]
    if not any(m.get("content") for m in messages):
        raise ToolError(400, "give 'prompt' or non-empty 'messages'", "invalid_parameters")
    body = await call(ctx, "gateway", "POST", "/v1/chat/completions",
                      json={"model": "chat", "messages": messages, "max_tokens": args.get("max_tokens", 128),
                            "temperature": args.get("temperature", 0.2)})
    choice = (body.get("choices") or [{}])[0]
    return {"content": (choice.get("message") or {}).get("content", ""), "model": body.get("model"),
            "finish_reason": choice.get("finish_reason"), "usage": body.get("usage")}


async def code_complete(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    body = await call(ctx, "gateway", "POST", "/v1/completions",
                      json={"model": "code", "prompt": args["prompt"], "max_tokens": args.get("max_tokens", 128),
                            "temperature": args.get("temperature", 0.2), "stop": args.get("stop")})
    choice = (body.get("choices") or [{}])[0]
    return {"text": choice.get("text", ""), "model": body.get("model"),
            "finish_reason": choice.get("finish_reason"), "usage": body.get("usage")}


async def embed(ctx: ToolContext, args: dict[str, Any]) -> dict[str, Any]:
    body = await call(ctx, "gateway", "POST", "/v1/embeddings",
                      json={"model": ctx.settings.embedding.model_name, "input": args["texts"]})
    vectors = [d.get("embedding", []) for d in body.get("data", [])]
    return {"model": body.get("model"), "count": len(vectors),
            "dimensions": len(vectors[0]) if vectors else 0, "embeddings": vectors}


TEXTS = {"type": "array", "items": {"type": "string", "maxLength": 8000}, "minItems": 1, "maxItems": 256}
MESSAGES = {"type": "array", "minItems": 1, "maxItems": 64, "items": {
    "type": "object", "required": ["role", "content"], "additionalProperties": False,
    "properties": {"role": {"type": "string", "enum": ["system", "user", "assistant"]},
                   "content": {"type": "string"}}}}
DOCUMENTS = {"type": "array", "minItems": 1, "maxItems": 256, "items": {"anyOf": [
    {"type": "string", "minLength": 1},
    {"type": "object", "required": ["text"], "properties": {"text": {"type": "string", "minLength": 1},
                                                            "id": {"type": "string"},
                                                            "metadata": {"type": "object"}}}]}}
MAX_TOKENS = integer("tokens to generate", 1, 2048, 128)
TEMPERATURE = {"type": "number", "minimum": 0, "maximum": 2, "default": 0.2}

TOOLS = (
    ToolSpec("memory_save", "Save memory", "Save a note (text + tags) in a memory project.",
             memory_save, schema(("text",), text=string("note text", minLength=1),
                                 project=string("project name", default="default"),
                                 tags={"type": "array", "items": {"type": "string"}, "maxItems": 32}),
             read_only=False, destructive=False),
    ToolSpec("memory_search", "Search memory", "Full-text search over saved notes.",
             memory_search, schema(("query",), query=string("words to find", minLength=1),
                                   project=string("only this project"), tag=string("only notes with this tag"),
                                   limit=integer("results", 1, 100, 10)),
             read_only=True, idempotent=True),
    ToolSpec("memory_list_projects", "List memory projects", "Memory projects with their note counts.",
             memory_list_projects, schema(), read_only=True, idempotent=True),
    ToolSpec("rag_query", "RAG query", "Retrieve passages from a collection and answer with sources.",
             rag_query, schema(("query",), query=string("question", minLength=1),
                               collection=string("collection name"), top_k=integer("passages", 1, 50, 4)),
             read_only=True),
    ToolSpec("rag_index", "RAG index", "Chunk, embed and store documents in a collection.",
             rag_index, schema(("documents",), documents=DOCUMENTS, collection=string("collection name")),
             read_only=False, destructive=False),
    ToolSpec("chat", "Chat", "Ask the chat model (through the gateway).",
             chat, schema(prompt=string("a single user message"), messages=MESSAGES, max_tokens=MAX_TOKENS,
                          temperature=TEMPERATURE), read_only=True),
    ToolSpec("code_complete", "Code completion", "Complete code with the code model (through the gateway).",
             code_complete, schema(("prompt",), prompt=string("code to continue", minLength=1),
                                   max_tokens=MAX_TOKENS, temperature=TEMPERATURE,
                                   stop={"type": "array", "items": {"type": "string"}, "maxItems": 4}),
             read_only=True),
    ToolSpec("embed", "Embed", "Embedding vectors of texts (through the gateway).",
             embed, schema(("texts",), texts=TEXTS), read_only=True, idempotent=True),
)

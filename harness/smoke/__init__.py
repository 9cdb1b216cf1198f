"""Smoke checks: one functional request per capability, one module per checked resource.

``gateway`` (chat, code, forced failover), ``embedding`` (``/embed``, OpenAI ``/v1/embeddings``),
``rag`` (index, re-index, queries in Korean and English), ``tools`` (REST, MCP, sandbox, RBAC,
approvals) and ``memory`` (save + search). Every check takes the stack's phase and returns a
``skip`` result when its services are not part of it; ``http`` holds what they share (timeout
policy, JSON POST, error text, result builder). Everything talks HTTP to ``settings.url(...)``;
services are stopped and started only through ``harness.stack`` (the ``suite`` CLI).
"""

"""From settings to a loaded ``llama_cpp.Llama``, and the two patches both inference paths rely on.

``llama_model_settings`` turns one role's ``ModelConfig`` into ``llama_cpp.server``'s own
``ModelSettings`` and ``load_llama`` loads it with ``llama_cpp.server``'s own loader, so the serial
and the batched service read a GGUF the same way. The patches adapt llama-cpp-python where its
behaviour would break a promise of the suite; each says why.
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from suite.settings import ModelConfig, Settings


def llama_model_settings(settings: Settings, role: str):
    """``llama_cpp.server`` ModelSettings for the 'chat' or 'code' model."""
    from llama_cpp.server.settings import ModelSettings

    cfg: ModelConfig = getattr(settings.inference, role)
    path = settings.model_path(role)
    if not path.is_file():
        raise FileNotFoundError(
            f"model file for '{role}' not found: {path} (run `suite models install`, "
            f"or set inference.{role}.path)"
        )
    return ModelSettings(
        model=str(path),
        model_alias=cfg.alias,
        chat_format=None if cfg.chat_format == "auto" else cfg.chat_format,  # None: the GGUF's template
        n_ctx=cfg.n_ctx,
        n_batch=cfg.n_batch,
        n_threads=cfg.n_threads or os.cpu_count() or 1,
        n_threads_batch=cfg.n_threads or os.cpu_count() or 1,
        n_gpu_layers=cfg.n_gpu_layers or 0,
        flash_attn=cfg.flash_attn,
        seed=cfg.seed,
        verbose=False,
    )


def load_llama(settings: Settings, role: str):
    """The role's model, loaded by ``llama_cpp.server``'s own loader (as its serial app does)."""
    from llama_cpp.server.model import LlamaProxy

    return LlamaProxy.load_llama_from_model_settings(llama_model_settings(settings, role))


KV_TYPE_BYTES = {0: 4.0, 1: 2.0, 30: 2.0, 8: 34 / 32, 2: 18 / 32}  # ggml f32, f16, bf16, q8_0, q4_0


def kv_bytes_per_token(llama) -> int | None:
    """KV cache bytes one token of one sequence takes (all layers, K and V), from the GGUF's metadata.

    What a slot costs is this times ``n_ctx`` (README: sizing slots); None when the metadata lacks a
    figure it needs.
    """
    meta = llama.metadata
    arch = meta.get("general.architecture", "")
    try:
        layers = int(meta[f"{arch}.block_count"])
        heads_kv = int(meta.get(f"{arch}.attention.head_count_kv") or meta[f"{arch}.attention.head_count"])
        head_dim = int(meta[f"{arch}.embedding_length"]) // int(meta[f"{arch}.attention.head_count"])
        key = int(meta.get(f"{arch}.attention.key_length", head_dim))
        value = int(meta.get(f"{arch}.attention.value_length", head_dim))
        width_k = KV_TYPE_BYTES[llama.context_params.type_k]
        width_v = KV_TYPE_BYTES[llama.context_params.type_v]
    except (KeyError, ValueError):  # per-layer head counts, an unknown cache type...
        return None
    return round(layers * heads_kv * (key * width_k + value * width_v))


def fresh_context_per_request(llama) -> None:
    """Start every generation from an empty KV cache when the model uses sliding-window attention.

    Why: llama-cpp-python reuses the longest common prompt prefix of the previous request. With
    Gemma 3's interleaved SWA cache that partial reuse gives different tokens than a fresh context
    (measured: the same greedy prompt answers differently after an unrelated request), so the answer
    would depend on who asked before. ``reset()`` drops the reuse; the cost is re-reading the prompt.
    Only the serial path needs it: the batched engine clears a sequence's cells before reusing a slot.
    """
    import llama_cpp

    if llama_cpp.llama_model_n_swa(llama.model) <= 0:
        return
    original = llama.generate

    def generate(tokens, *args, **kwargs):
        llama.reset()
        return original(tokens, *args, **kwargs)

    llama.generate = generate


def cap_max_tokens(llama, cap: int | None) -> None:
    """Never generate more than ``cap`` tokens per request (``inference.max_tokens_cap``) on the serial path.

    Why: llama_cpp.server has no such limit; a request without ``max_tokens`` (or with ``0``) runs
    to the end of the context. The batched engine applies the same cap in ``max_tokens_for``.
    """
    if not cap:
        return
    for name in ("create_completion", "create_chat_completion"):
        original = getattr(llama, name)

        def capped(*args, _original=original, **kwargs):
            asked = kwargs.get("max_tokens")
            kwargs["max_tokens"] = cap if asked is None or asked <= 0 else min(asked, cap)
            return _original(*args, **kwargs)

        setattr(llama, name, capped)


def name_replies(llama, alias: str) -> None:
    """Answer a request without ``model`` with the alias, not the GGUF's path (the serial path).

    Why: ``Llama._create_completion`` names its replies ``model or self.model_path``; a client that
    sends no model would read the server's filesystem layout in every reply.
    """
    for name in ("create_completion", "create_chat_completion"):
        original = getattr(llama, name)

        def named(*args, _original=original, **kwargs):
            if kwargs.get("model") is None:
                kwargs["model"] = alias
            return _original(*args, **kwargs)

        setattr(llama, name, named)


def client_errors_are_4xx(app: FastAPI) -> None:
    """Keep a client's mistake a 4xx on llama_cpp.server's routes (the serial path).

    Why: its route handler catches every exception, request validation included, and answers 500.
    This adapter (the narrowest place: its error mapper) answers 400 in the suite's error shape
    instead. A body that is not JSON never gets this far: the request guard (``suite.web.guard``)
    refuses it at the edge, as on every service.
    """
    from fastapi.exceptions import RequestValidationError
    from llama_cpp.server.errors import RouteErrorHandler

    from suite.web.errors import validation_message

    original = RouteErrorHandler.error_message_wrapper
    if not getattr(original, "_suite_adapter", False):
        def error_message_wrapper(self, error, body=None):
            if isinstance(error, RequestValidationError):
                return 400, {"message": validation_message(error), "type": "invalid_request_error",
                             "param": None, "code": "invalid_parameters"}
            return original(self, error, body)

        error_message_wrapper._suite_adapter = True
        RouteErrorHandler.error_message_wrapper = error_message_wrapper


__all__ = ["cap_max_tokens", "client_errors_are_4xx", "fresh_context_per_request", "kv_bytes_per_token",
           "llama_model_settings", "load_llama", "name_replies"]

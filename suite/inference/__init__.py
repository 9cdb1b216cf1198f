"""Inference services: a continuous-batching engine (default) or llama_cpp.server's serial app over a GGUF.

``app`` picks the engine; ``model`` loads the GGUF; ``batched_app`` + ``engine`` (+ ``sampling``,
``textstream``, ``openai_surface``) are the batched path; ``serial_app`` is the ``llama_cpp.server`` path.
"""

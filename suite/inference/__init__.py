"""Inference services: llama-cpp-python's OpenAI server over a GGUF, plus probes and metrics."""

"""Embedding service: sentence-transformers behind ``/embed`` and OpenAI ``/v1/embeddings``."""

"""Suite Workbench services: inference, gateway, embedding, RAG, tools, memory, supervisor."""

__version__ = "0.1.0"

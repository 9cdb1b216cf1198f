"""RAG service: index documents into a vector store, answer queries through the gateway with sources."""

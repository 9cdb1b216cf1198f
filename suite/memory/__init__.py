"""Memory service: projects and notes on SQLite with full-text search, and its maintainer loop."""

"""OpenAI-compatible gateway: routes by model alias, retries, falls back, cools failed upstreams."""

"""Tool server: one table of tools served over MCP (Streamable HTTP at /mcp) and REST (/tools/{name}),
behind API keys, RBAC, approvals, rate limits, a file sandbox and an audit log."""

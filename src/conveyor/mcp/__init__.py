"""conveyor's MCP server: jobs, counts and schedules as tools for AI agents.

Needs the official ``mcp`` SDK (``pip install 'conveyor[mcp]'``). ``conveyor mcp
module:queue`` serves it; :func:`build_server` builds it for your own transport::

    from conveyor.mcp import build_server

    server = build_server(queue, allow_write=True, allow_enqueue=["send-welcome"])
    await server.run_stdio_async()

Read-only by default; see docs/mcp.md.
"""

from conveyor.mcp.server import LIST_LIMIT, READ_TOOLS, WRITE_TOOLS, build_server, job_summary
from conveyor.mcp.transports import serve_http, serve_stdio

__all__ = [
    "LIST_LIMIT",
    "READ_TOOLS",
    "WRITE_TOOLS",
    "build_server",
    "job_summary",
    "serve_http",
    "serve_stdio",
]

"""Serving an MCP server built by :func:`conveyor.mcp.build_server`: over stdio (the
client starts this process) or over streamable HTTP, optionally behind a bearer token.
"""

import hmac
import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["BearerToken", "serve_http", "serve_stdio"]

#: Where the streamable HTTP endpoint is mounted.
HTTP_PATH = "/mcp"


async def serve_stdio(server: MCPServer[Any]) -> None:
    """Serve JSON-RPC on this process's stdin/stdout until stdin closes."""
    await server.run_stdio_async()


class BearerToken:
    """ASGI middleware: HTTP requests without ``Authorization: Bearer TOKEN`` get 401
    (compared in constant time) and never reach the MCP endpoint."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = b""
            for key, value in scope.get("headers", ()):
                if key.lower() == b"authorization":
                    given = value
            if not hmac.compare_digest(given, self.expected):
                body = json.dumps(
                    {"error": {"code": "unauthorized", "message": "a bearer token is required"}}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b"Bearer"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def serve_http(
    server: MCPServer[Any], *, host: str, port: int, token: str | None = None
) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` with uvicorn until SIGINT or
    SIGTERM. On a loopback ``host`` the SDK refuses other ``Host`` and ``Origin``
    headers (DNS rebinding); ``token`` requires ``Authorization: Bearer TOKEN``."""
    import uvicorn

    app: ASGIApp = server.streamable_http_app(streamable_http_path=HTTP_PATH, host=host)
    if token:
        app = BearerToken(app, token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve()

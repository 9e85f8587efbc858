"""``conveyor dashboard``: serve :func:`conveyor.web.create_app` with uvicorn, behind a token."""

from __future__ import annotations

import ipaddress
from typing import Any

import click

from conveyor.cli.app import Ctx, err_console, fail, pass_ctx

__all__ = ["dashboard"]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command()
@click.argument("app", required=False)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--token",
    envvar="CONVEYOR_DASHBOARD_TOKEN",
    help="Admin token (Authorization: Bearer …, or ?token= once). Required unless --host "
    "is a loopback address. [env CONVEYOR_DASHBOARD_TOKEN]",
)
@pass_ctx
def dashboard(obj: Ctx, app: str | None, host: str, port: int, token: str | None) -> None:
    """Serve the web dashboard, status API and metrics (needs conveyor[web])."""
    try:
        import uvicorn

        from conveyor.web import create_app
        from conveyor.web.tokens import TokenCookie, token_authenticator
    except ImportError as exc:
        fail(f"the dashboard needs: pip install 'conveyor[web]' ({exc})", highlight=True)
    if app:
        obj.app = app
    token = token or None  # an empty token is no token
    queue = obj.queue()
    if not token and not _is_loopback(host):
        raise click.UsageError(
            "serving beyond localhost needs --token (or CONVEYOR_DASHBOARD_TOKEN)"
        )
    web_app: Any = create_app(queue, authenticate=token_authenticator(token))
    if token:
        web_app = TokenCookie(web_app, token)
    err_console.print(f"dashboard: http://{host}:{port}/dashboard")
    uvicorn.run(web_app, host=host, port=port, log_level="warning")

"""``conveyor dashboard``: serve :func:`conveyor.web.create_app` with uvicorn, behind a token."""

from __future__ import annotations

import ipaddress
from typing import Any

import click

from conveyor.cli.app import Ctx, err_console, fail, pass_ctx
from conveyor.errors import ValidationError

__all__ = ["dashboard"]

#: The names a browser on this machine reaches a loopback server by.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _allowed_hosts(given: tuple[str, ...], host: str) -> list[str]:
    """The ``Host`` names to answer: the repeated or comma-separated ``--allowed-host``
    values, else the loopback names plus ``host`` when it is one specific address."""
    names = [part.strip() for item in given for part in item.split(",") if part.strip()]
    if names:
        return names
    names = list(LOOPBACK_HOSTS)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name
        names.append(host)
    else:
        if not address.is_unspecified:  # 0.0.0.0 and :: name no host
            names.append(f"[{address.compressed}]" if address.version == 6 else str(address))
    return list(dict.fromkeys(names))


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
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    envvar="CONVEYOR_DASHBOARD_ALLOWED_HOSTS",
    metavar="NAME",
    help="A Host name to answer, any port (repeat or comma-separate; '*.example.com' for "
    "subdomains, '*' for any). Other Host headers get 400. Default: localhost, 127.0.0.1, "
    "[::1] and --host unless it is 0.0.0.0 or ::. [env CONVEYOR_DASHBOARD_ALLOWED_HOSTS]",
)
@pass_ctx
def dashboard(
    obj: Ctx,
    app: str | None,
    host: str,
    port: int,
    token: str | None,
    allowed_hosts: tuple[str, ...],
) -> None:
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
    hosts = _allowed_hosts(allowed_hosts, host)
    queue = obj.queue()
    if not token and not _is_loopback(host):
        raise click.UsageError(
            "serving beyond localhost needs --token (or CONVEYOR_DASHBOARD_TOKEN)"
        )
    try:
        web_app: Any = create_app(
            queue, authenticate=token_authenticator(token), allowed_hosts=hosts
        )
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint="'--allowed-host'") from None
    if token:
        web_app = TokenCookie(web_app, token)
    err_console.print(f"dashboard: http://{host}:{port}/dashboard")
    err_console.print(f"allowed Host names: {', '.join(hosts)}", markup=False, highlight=False)
    uvicorn.run(web_app, host=host, port=port, log_level="warning")

"""Login with one shared admin token, as ``conveyor dashboard --token`` serves it.

::

    app = TokenCookie(create_app(queue, authenticate=token_authenticator(token)), token)

The token is compared in constant time wherever it is given: an ``Authorization:
Bearer`` header, a ``?token=`` query parameter, or the ``conveyor_token`` cookie that
:class:`TokenCookie` sets when the dashboard is first opened with ``?token=``.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from conveyor.web.principal import Authenticate, Principal

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["COOKIE", "TokenCookie", "token_authenticator"]

COOKIE = "conveyor_token"


def _matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


class TokenCookie:
    """ASGI middleware: opening any page once with ``?token=…`` (the right token) stores
    the token in an HttpOnly, SameSite=Strict cookie, so the browser's later API calls
    carry it without the token staying in URLs.

    It only sets the cookie; :func:`token_authenticator` decides who gets in.

    Args:
        app: the ASGI app to wrap.
        token: the admin token.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = parse_qs(scope.get("query_string", b"").decode()).get("token", [""])[0]
            if given and _matches(given, self.token):
                cookie = f"{COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"

                async def send_with_cookie(message: Message) -> None:
                    if message["type"] == "http.response.start":
                        headers = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
                        message = {**message, "headers": headers}
                    await send(message)

                await self.app(scope, receive, send_with_cookie)
                return
        await self.app(scope, receive, send)


def token_authenticator(token: str | None) -> Authenticate:
    """An ``authenticate`` for :func:`conveyor.web.create_app` guarded by one token.

    Args:
        token: the admin token, or None for none: then every caller is an admin (only
            safe on a loopback address, which is why ``conveyor dashboard`` refuses any
            other host without a token).

    Returns:
        ``authenticate(request)``: an admin :class:`Principal` (no tenant) when the
        request's bearer token, ``?token=`` or ``conveyor_token`` cookie matches, else
        None (401).
    """

    def authenticate(request: Request) -> Principal | None:
        if token is None:
            return Principal(tenant=None, admin=True)
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        given = given or request.query_params.get("token") or request.cookies.get(COOKIE)
        if given and _matches(given, token):
            return Principal(tenant=None, admin=True)
        return None

    return authenticate

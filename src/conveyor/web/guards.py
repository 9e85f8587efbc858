"""What every web route shares: the error the routes raise (answered as ``{"error":
{"code", "message"}}``) and the cross-site check of state-changing requests. Its own
module so the status API (``app.py``) and the dashboard (``dashboard_api.py``) both use
it without importing each other."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse

from conveyor.web.hosts import split_host
from conveyor.web.serialize import encode_json

__all__ = ["ApiError", "check_same_origin", "json_response"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with an HTTP status.

    Args:
        status: the HTTP status code.
        code: a stable, machine-readable code (``not_found``, ``unauthorized``, …).
        message: a human-readable message (never containing job data).
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _origin_matches(origin: str, scheme: str, host: str | None) -> bool:
    """Whether the ``Origin`` header names this request's origin: its scheme, and the host
    and port of its ``Host`` header."""
    h = split_host(host)
    if scheme not in _DEFAULT_PORTS or h is None:
        return False
    try:
        o = urlsplit(origin)
    except ValueError:  # a malformed IPv6 literal
        return False
    theirs = split_host(o.netloc) if o.scheme == scheme and o.path == "" else None
    default = _DEFAULT_PORTS[scheme]
    return theirs is not None and (theirs[0], theirs[1] or default) == (h[0], h[1] or default)


def check_same_origin(request: Request) -> None:
    """Refuse a state-changing request made by another site (CSRF).

    ``Sec-Fetch-Site: cross-site`` (and ``same-site``: a sibling subdomain is another
    origin) is refused, and so is an ``Origin`` (``null`` included) that is not this
    request's origin: its scheme, and the host and port of its ``Host`` header. Requests
    without either header (curl, server-to-server) pass: browsers send at least one of
    them on every cross-origin POST.

    Raises:
        ApiError: 403 ``cross_site``.
    """
    site = request.headers.get("sec-fetch-site", "").strip().lower()
    origin = request.headers.get("origin")
    if site in ("cross-site", "same-site") or (
        origin is not None
        and not _origin_matches(origin.strip(), request.url.scheme, request.headers.get("host"))
    ):
        raise ApiError(403, "cross_site", "cross-site request refused")


class _JSONResponse(JSONResponse):
    """JSON that every stored job renders to (see :func:`encode_json`)."""

    def render(self, content: Any) -> bytes:
        return encode_json(content)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON answer that is never cached and never sniffed as another type."""
    base = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return _JSONResponse(data, status, headers={**base, **(headers or {})})

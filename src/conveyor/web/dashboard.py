"""The dashboard page: a one page app made of three files in ``dashboard_static/``
(``index.html``, ``dashboard.js``, ``dashboard.css``), served by the app itself: no
external assets, no inline script or style.

The page holds no job data: its script fetches the JSON API (:mod:`conveyor.web.dashboard_api`)
and renders every value with ``textContent``. Its Content-Security-Policy allows one
script and one stylesheet: the app's own ``dashboard.js`` by its exact URL (and by its
SHA-256, which the page also gives as its Subresource Integrity hash), and
``dashboard.css`` by its exact URL. ``'self'`` is not used where the URL can be written
out (from the request's scheme and ``Host``), so that a dashboard mounted in a larger
application does not let the rest of that origin's files run as script in its page.
"""

from __future__ import annotations

import base64
import hashlib
import html
from functools import cache
from importlib import resources
from typing import NamedTuple
from urllib.parse import quote

from conveyor.web.hosts import split_host

__all__ = ["ASSETS", "Asset", "asset", "headers", "render"]

_PACKAGE = "conveyor.web"
_FOLDER = "dashboard_static"
#: The files served under ``{dashboard_path}/assets/`` and their content types.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# A CSP host-part: DNS labels or an IPv4 address (CSP has no syntax for IPv6 literals).
_CSP_HOST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


class Asset(NamedTuple):
    """A static file of the dashboard: its bytes, content type, ETag and SHA-256 (as an
    integrity / CSP hash source, ``sha256-…``)."""

    body: bytes
    content_type: str
    etag: str
    sha256: str


def _read(name: str) -> bytes:
    return resources.files(_PACKAGE).joinpath(_FOLDER).joinpath(name).read_bytes()


@cache
def asset(name: str) -> Asset | None:
    """The static file ``name`` (``dashboard.js`` or ``dashboard.css``), or None."""
    if name not in ASSETS:
        return None
    body = _read(name)
    digest = hashlib.sha256(body).digest()
    return Asset(
        body,
        ASSETS[name],
        '"' + digest.hex()[:32] + '"',
        "sha256-" + base64.b64encode(digest).decode(),
    )


@cache
def _template() -> str:
    return _read("index.html").decode("utf-8")


def _origin(scheme: str, host_header: str | None) -> str | None:
    """``scheme://host[:port]`` as a CSP source, or None when the ``Host`` header cannot be
    written as one (missing, malformed, an IPv6 literal)."""
    parsed = split_host(host_header)
    if parsed is None or scheme not in ("http", "https"):
        return None
    name, port = parsed
    if not name or not set(name) <= _CSP_HOST:
        return None
    return f"{scheme}://{name}" + (f":{port}" if port is not None else "")


def headers(assets_path: str, scheme: str, host_header: str | None) -> dict[str, str]:
    """Security headers for the page: a strict CSP naming the dashboard's own two files,
    no framing, no sniffing, no referrer, no caching.

    Args:
        assets_path: the absolute path of the assets folder, e.g. ``/jobs/dashboard/assets``.
        scheme: the request's scheme (``http`` or ``https``).
        host_header: the request's ``Host`` header.
    """
    js, css = asset("dashboard.js"), asset("dashboard.css")
    assert js is not None and css is not None
    origin = _origin(scheme, host_header)
    path = quote(assets_path, safe="/")
    if origin is not None:
        script_src = f"'{js.sha256}' {origin}{path}/dashboard.js"
        style_src = f"{origin}{path}/dashboard.css"
    else:  # the URL cannot be written out: same-origin files only
        script_src = f"'{js.sha256}' 'self'"
        style_src = "'self'"
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src {script_src}",
            f"style-src {style_src}",
            "connect-src 'self'",
            "img-src 'self' data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def render(base: str) -> str:
    """The page, for a dashboard whose absolute path is ``base`` (e.g. ``/jobs/dashboard``
    when mounted at ``/jobs``; ``""`` at the root): its API is ``{base}/api`` and its
    assets ``{base}/assets``. Every value is HTML-escaped."""
    js = asset("dashboard.js")
    assert js is not None
    values = {
        "__CONVEYOR_BASE__": base,
        "__CONVEYOR_API__": f"{base}/api",
        "__CONVEYOR_ASSETS__": quote(f"{base}/assets", safe="/"),
        "__CONVEYOR_JS_SRI__": js.sha256,
    }
    page = _template()
    for placeholder, value in values.items():
        page = page.replace(placeholder, html.escape(value, quote=True))
    return page

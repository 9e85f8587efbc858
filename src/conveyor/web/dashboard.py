"""The dashboard page: one self-contained HTML file (``dashboard.html``), no external assets.

The page holds no job data: its script fetches the JSON API and renders every value
with ``textContent``. Its inline script and style are allowed by hash in a strict
Content-Security-Policy, so an injected script could not run even if markup slipped in.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from functools import cache
from importlib import resources

__all__ = ["PLACEHOLDER", "headers", "render"]

PLACEHOLDER = "__CONVEYOR_API__"


@cache
def _template() -> str:
    return resources.files("conveyor.web").joinpath("dashboard.html").read_text("utf-8")


def _hashes(tag: str) -> str:
    blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", _template(), flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(b.encode()).digest()).decode() for b in blocks)
    return " ".join(f"'sha256-{d}'" for d in digests)


@cache
def headers() -> dict[str, str]:
    """Security headers for the page: strict CSP, no framing, no sniffing, no referrer."""
    csp = "; ".join(
        [
            "default-src 'none'",
            f"script-src {_hashes('script')}",
            f"style-src {_hashes('style')}",
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


def render(api_base: str) -> str:
    """The page, pointed at the JSON API under ``api_base`` (HTML-escaped).

    Args:
        api_base: the API's absolute path, e.g. ``/jobs/dashboard/api`` when mounted.
    """
    return _template().replace(PLACEHOLDER, html.escape(api_base, quote=True), 1)

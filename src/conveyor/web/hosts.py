"""``Host`` headers: which names an app answers to (against DNS rebinding), and parsing them.

A page on ``attacker.example`` whose DNS name is re-pointed at ``127.0.0.1`` makes the
browser send ``Host: attacker.example:8765`` to a dashboard on loopback, and treat the
answers as that page's own (same origin): only the ``Host`` header tells the two apart.
:class:`AllowedHosts` is the list the app checks it against.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from conveyor.errors import ValidationError

__all__ = ["AllowedHosts", "split_host"]

_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
# A Host header: a DNS name or IPv4 address, or a bracketed IPv6 address, then an optional
# port. Nothing else (no userinfo, no path) is a Host header.
_HOST = re.compile(r"(?:\[(?P<v6>[0-9a-f:.]+)\]|(?P<name>[a-z0-9_.-]+))(?::(?P<port>[0-9]{1,5}))?")


def _ipv6(text: str) -> str | None:
    """``text`` as a compressed IPv6 address, or None when it is not one."""
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return None


def split_host(value: str | None) -> tuple[str, int | None] | None:
    """A ``Host`` header as ``(name, port)``: the name lowercased, an IPv6 address without
    its brackets and compressed; None when ``value`` is missing or not a Host header."""
    if not value:
        return None
    m = _HOST.fullmatch(value.strip().lower())
    if m is None:
        return None
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        return None
    if m["v6"] is not None:
        v6 = _ipv6(m["v6"])
        return None if v6 is None else (v6, port)
    name = m["name"]
    return (name, port) if _NAME.fullmatch(name) else None


class AllowedHosts:
    """The host names an app answers to; any port goes.

    Args:
        names: host names (``jobs.example.com``), IP addresses (``127.0.0.1``, ``[::1]``
            or ``::1``), ``*.example.com`` for every subdomain of ``example.com`` (not
            ``example.com`` itself), or ``*`` for any host. Matched without regard to
            case; no scheme and no port.

    Raises:
        ValidationError: ``names`` is a string rather than a list, or a name is malformed.
    """

    def __init__(self, names: Iterable[str]) -> None:
        if isinstance(names, str | bytes) or not isinstance(names, Iterable):
            raise ValidationError(
                f"allowed_hosts must be a list of host names (or None), got {names!r}"
            )
        exact: set[str] = set()
        suffixes: set[str] = set()
        self.any = False
        for raw in names:
            if not isinstance(raw, str):
                raise ValidationError(f"allowed_hosts holds {raw!r}, not a host name")
            name = raw.strip().lower()
            if name == "*":
                self.any = True
            elif name.startswith("*.") and _NAME.fullmatch(name[2:]):
                suffixes.add(name[1:])
            elif (v6 := _ipv6(name[1:-1] if name.startswith("[") else name)) is not None and (
                name.startswith("[") == name.endswith("]")
            ):
                exact.add(v6)
            elif _NAME.fullmatch(name):
                exact.add(name)
            else:
                raise ValidationError(
                    f"allowed_hosts holds {raw!r}: give a host name or IP address without "
                    "scheme or port, '*.domain' or '*'"
                )
        self.exact = frozenset(exact)
        self.suffixes = tuple(sorted(suffixes))

    def permits(self, host: str | None) -> bool:
        """Whether a request with this ``Host`` header is served."""
        if self.any:
            return True
        parsed = split_host(host)
        if parsed is None:
            return False
        name = parsed[0]
        return name in self.exact or name.endswith(self.suffixes)

    def __repr__(self) -> str:
        names = ["*"] if self.any else [*sorted(self.exact), *(f"*{s}" for s in self.suffixes)]
        return f"AllowedHosts({names!r})"

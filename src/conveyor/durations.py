"""Durations: the one parser every duration option, argument and ``CONVEYOR_*`` twin goes
through (DESIGN.md: seconds as int/float, a ``timedelta``, or a string such as ``"500ms"``,
``"30s"``, ``"15m"``, ``"12h"``, ``"7d"``, ``"2w"``). Pure, below every other module."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any, TypeAlias

from conveyor.errors import ValidationError

__all__ = ["Duration", "parse_duration"]

#: What a duration may be given as.
Duration: TypeAlias = "float | int | timedelta | str"

_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


def parse_duration(value: Any, what: str, *, positive: bool = True) -> float:
    """Seconds from a number, a ``timedelta`` or a string with an optional unit.

    Refuses (``ValidationError`` naming ``what`` and the value) anything else: a negative
    duration, zero when ``positive``, NaN, infinity, a bool, ``"7 days"``, ``"-1h"``,
    ``"1e400s"``."""
    given = value
    if isinstance(value, timedelta):
        value = value.total_seconds()
    elif isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match is None:
            raise ValidationError(
                f"{what} must be seconds or a duration such as 500ms, 30s, 15m, 12h, 7d; "
                f"got {given!r}"
            )
        value = float(match.group(1)) * _UNIT[match.group(2)]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(
            f"{what} must be seconds, a timedelta or a duration such as 30s; got {given!r}"
        )
    try:
        seconds = float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if seconds != seconds or seconds < 0 or (positive and seconds == 0) or seconds == math.inf:
        raise ValidationError(
            f"{what} must be {'> 0' if positive else '>= 0'} seconds, got {given!r}"
        )
    return seconds

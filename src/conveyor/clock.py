"""Injectable clocks: every transition takes ``now`` from one, so tests move time."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

__all__ = ["NEVER", "Clock", "SystemClock", "from_ts", "to_ts"]

#: "Not before the end of time": the ``run_at`` of a job waiting on a token without a
#: timeout (9999-12-31T23:59:59Z). A finite float, so every store orders and converts it
#: like any other time.
NEVER = 253402300799.0


@runtime_checkable
class Clock(Protocol):
    """Source of wall-clock time, as seconds since the Unix epoch."""

    def now(self) -> float:
        """Current time in epoch seconds."""
        ...


class SystemClock:
    """The real clock (``time.time``)."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()


def from_ts(ts: float | None) -> datetime | None:
    """Epoch seconds to an aware UTC datetime (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC)


def to_ts(dt: datetime) -> float:
    """An aware datetime to epoch seconds."""
    return dt.timestamp()

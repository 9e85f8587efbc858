"""Flow control (DESIGN.md "Flow control: limits and fairness"): :class:`Limit` (how many
run at once) and :class:`Rate` (how many start per window), per job name on a definition
or per channel with ``queue.set_channel_limits``; pure values, checked when built."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.durations import Duration, parse_duration
from conveyor.errors import ValidationError

__all__ = ["FAIR_BY", "KEYS", "ChannelLimits", "Limit", "Rate", "rate_span"]

#: What a limit may be counted per: the job name (or channel) alone, or each value of
#: the jobs' group or tenant.
KEYS = (None, "group", "tenant")
#: What a channel's due jobs may be shared out by, round-robin.
FAIR_BY = (None, "tenant", "group")


def _count(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1_000_000:
        raise ValidationError(f"{what} must be an int from 1 to 1000000, got {n!r}")
    return n


def _key(key: object, what: str) -> str | None:
    if key not in KEYS:
        raise ValidationError(f"{what} key must be None, 'group' or 'tenant', got {key!r}")
    return key


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``n`` jobs running at once, across every worker and process: of the job
    name (``key=None``), or of each group or tenant value (``key="group"`` /
    ``"tenant"``; jobs without one share the value "none"). With ``key="group"`` it
    replaces the one-at-a-time rule of ``group=`` for that job name."""

    n: int
    key: str | None = None

    def __post_init__(self) -> None:
        _count(self.n, "Limit n")
        _key(self.key, "Limit")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``n`` starts in any window of length ``per`` (a sliding window: never a
    burst above ``n``), across every worker and process, of the job name or of each
    group or tenant value (``key``). A job over the rate stays ``queued``, uses no
    attempt, and starts as soon as the window allows."""

    n: int
    per: Duration
    key: str | None = None

    def __post_init__(self) -> None:
        _count(self.n, "Rate n")
        seconds = parse_duration(self.per, "Rate per")
        if seconds > 30 * 86400:
            raise ValidationError(f"Rate per must be at most 30 days, got {self.per!r}")
        object.__setattr__(self, "per", seconds)
        _key(self.key, "Rate")

    @property
    def seconds(self) -> float:
        """The window, in seconds."""
        return float(self.per)  # type: ignore[arg-type]


def rate_span(per: float) -> float:
    """How long a span of a rate limit's start log lasts, for a window of ``per`` seconds:
    1/50 of the window, at most one second. A store counts a rate's starts per span
    (one row or entry per span and key value, not one per start), and counts a span in
    full as long as its latest start is inside the window: never a start too few, so
    the limit is never exceeded, at the price of a job starting at most one span later
    than an exact log would let it (20 ms for ``per="1s"``, 1 s for ``per="1m"``)."""
    return min(per / 50.0, 1.0)


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    """A channel's stored limits (``queue.set_channel_limits``): at most ``concurrency``
    of its jobs running at once, at most ``rate`` starts, and its due jobs claimed
    round-robin across tenants or groups (``fair_by``). None: no such limit."""

    channel: str
    concurrency: int | None = None
    rate: Rate | None = None
    fair_by: str | None = None

    def __post_init__(self) -> None:
        if self.concurrency is not None:
            _count(self.concurrency, "concurrency")
        if self.rate is not None and not isinstance(self.rate, Rate):
            raise ValidationError(f"rate must be a conveyor.Rate, got {self.rate!r}")
        if self.rate is not None and self.rate.key is not None:
            raise ValidationError("a channel's rate counts the whole channel: give it no key")
        if self.fair_by not in FAIR_BY:
            raise ValidationError(
                f"fair_by must be None, 'tenant' or 'group', got {self.fair_by!r}"
            )

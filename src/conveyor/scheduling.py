"""Cron and interval schedules: the next tick, with exact DST rules (pure, no I/O).

A schedule is either a cron expression evaluated in an IANA time zone or a fixed
interval. Cron expressions have exactly 5 fields (``minute hour day-of-month month
day-of-week``; no seconds or year field) or are one of the macros ``@yearly``,
``@annually``, ``@monthly``, ``@weekly``, ``@daily``, ``@midnight``, ``@hourly``.
Day-of-month and day-of-week combine as in Vixie cron (either matches when both are
restricted). Refused: hashed (``H``) and random (``R``) fields, since every process
must compute the same ticks; equal-ended ranges such as ``3-3``, which croniter reads as
the whole field; and expressions that never fire (``0 0 30 2 *``).

DST rules. The expression's matches are iterated (by croniter) as *naive local wall
times*; each one is then mapped to a UTC instant in the schedule's zone:

* A wall time that does not exist (a spring-forward gap skips it) maps to the first
  instant after the gap: ``30 2 * * *`` in America/New_York on 2026-03-08 fires at
  03:00 EDT (07:00 UTC). Wall times that land on the same instant (several skipped
  ones, or a skipped one and the wall time that ends the gap) fire once.
* A wall time that occurs twice (a fall-back repeats it) fires at both occurrences
  when the hour field matches every hour (``*``, ``*/1``, ``0-23``): such a schedule
  follows real elapsed time, so ``0 * * * *`` fires 23 times on a spring-forward day
  and 25 times on a fall-back day. With any other hour field it fires once, at the
  first occurrence (``fold=0``): ``30 1 * * *`` fires exactly once every day.
* Ticks are strictly increasing and always strictly after the given instant, also
  when that instant lies in a repeated hour or was given as a wall time in a gap.

Interval schedules (``@every <seconds>``, at least 1 second) are anchored to the Unix
epoch, whatever the zone: the next tick is the next multiple of the interval, so every
process computes the same ticks without sharing state.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter

from conveyor.errors import ValidationError

__all__ = ["Schedule", "compile_schedule", "next_tick", "validate_timezone"]

_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=UTC)
_SECOND = timedelta(seconds=1)
# How far croniter looks for a match, from _CHECK_FROM at compile time (the "never
# fires" check) and from any start later. Not 5 years: a real schedule such as
# "0 0 * 2 1#5" (a fifth Monday in February) can wait 28 years between ticks.
_MAX_YEARS = 50
_CHECK_FROM = datetime(2000, 1, 1)
_MAX_INTERVAL = 100 * 366 * 86400.0  # keeps every tick a representable datetime
_ZONE_HINT = "expected an IANA name such as 'UTC' or 'Europe/Amsterdam'"


def validate_timezone(name: str) -> ZoneInfo:
    """Return the zone for an IANA time zone name.

    Args:
        name: An IANA name such as ``"UTC"`` or ``"Europe/Amsterdam"``.

    Returns:
        The matching :class:`zoneinfo.ZoneInfo`.

    Raises:
        ValidationError: The name is not a known zone. ``"localtime"`` is refused too:
            it means a different zone on every host.
    """
    if not isinstance(name, str) or not name or name == "localtime":
        raise ValidationError(f"invalid time zone {name!r}: {_ZONE_HINT}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValidationError(f"unknown time zone {name!r}: {_ZONE_HINT}") from exc


@dataclass(frozen=True, slots=True)
class Schedule:
    """A validated cron or interval schedule; build one with :func:`compile_schedule`.

    Attributes:
        expression: The cron expression as given (stripped), or ``"@every <seconds>"``
            for an interval (seconds shown as an int when whole, e.g. ``"@every 300"``).
            Passing it back to :func:`compile_schedule` gives an equal schedule.
        timezone: The IANA zone cron ticks are computed in (intervals ignore it).
        interval: The interval in seconds, or None for a cron schedule.
    """

    expression: str
    timezone: str = "UTC"
    interval: float | None = field(init=False, default=None)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _cron: croniter[datetime] | None = field(init=False, default=None, repr=False, compare=False)
    _every_hour: bool = field(init=False, default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_zone", validate_timezone(self.timezone))
        if not isinstance(self.expression, str):
            raise ValidationError(f"a cron expression must be a string, got {self.expression!r}")
        text = self.expression.strip()
        head = text.split(maxsplit=1)[:1]
        if head and head[0].lower() == "@every":
            seconds = _interval(_parse_every(text), text)
            object.__setattr__(self, "expression", _every_text(seconds))
            object.__setattr__(self, "interval", seconds)
            return
        cron = _parse_cron(text)
        object.__setattr__(self, "expression", text)
        object.__setattr__(self, "_cron", cron)
        object.__setattr__(self, "_every_hour", cron.expanded[1] == ["*"])

    def next_after(self, ts: float) -> float:
        """Return the first tick strictly after ``ts``.

        Args:
            ts: A time in Unix epoch seconds.

        Returns:
            The tick, in Unix epoch seconds, strictly greater than ``ts``.
        """
        if self.interval is not None:
            step = self.interval
            tick = (math.floor(ts / step) + 1) * step
            if tick <= ts:  # float rounding in ts / step
                tick += step
            elif tick - step > ts:
                tick -= step
            return tick
        # Cron ticks and gap ends are whole seconds, so none lies in (floor(ts), ts].
        return float(self._cron_next(math.floor(ts)))

    def _cron_next(self, ts: int) -> int:
        """The first cron tick strictly after epoch second ``ts``."""
        zone, every_hour = self._zone, self._every_hour
        local = datetime.fromtimestamp(ts, zone)
        start = local.replace(tzinfo=None, fold=0)
        if every_hour and not local.fold:
            # ts may be in the first pass of a repeated hour: the second occurrences of
            # the wall times just before it are still ahead, so start that much earlier.
            repeat = _offset(zone, start) - _offset(zone, start.replace(fold=1))
            start -= max(repeat, 0) * _SECOND
        assert self._cron is not None  # only interval schedules have no croniter
        cron = copy.copy(self._cron)  # croniter is stateful; a shallow copy is cheap
        cron.set_current(start)
        best: int | None = None  # the earliest second occurrence seen so far
        while True:
            wall = cron.get_next()
            base = (wall - _EPOCH) // _SECOND
            off0, off1 = _offset(zone, wall), _offset(zone, wall.replace(fold=1))
            first = base - off0
            if off0 < off1:  # skipped by a gap: fire when the gap ends
                first = _gap_end(zone, base - off1, first)
            # The earliest instant of each wall time never decreases as wall time
            # grows, so the first one past ts settles it (unless a second pass is sooner).
            if first > ts:
                return first if best is None else min(first, best)
            if every_hour and off0 > off1 and base - off1 > ts:
                second = base - off1
                best = second if best is None else min(best, second)


def _offset(zone: ZoneInfo, dt: datetime) -> int:
    """UTC offset in seconds of ``dt`` (naive wall time or aware) in ``zone``."""
    offset = zone.utcoffset(dt)
    return 0 if offset is None else offset // _SECOND


def _gap_end(zone: ZoneInfo, before: int, after: int) -> int:
    """The transition instant in ``(before, after]``: the first instant after a gap."""
    target = _offset(zone, datetime.fromtimestamp(after, zone))
    while after - before > 1:
        middle = (before + after) // 2
        if _offset(zone, datetime.fromtimestamp(middle, zone)) == target:
            after = middle
        else:
            before = middle
    return after


def _parse_cron(text: str) -> croniter[datetime]:
    def invalid(why: str) -> ValidationError:
        return ValidationError(f"invalid cron expression {text!r}: {why}")

    fields = text.split()
    if not fields:
        raise invalid("it is empty")
    if text.startswith("@"):
        if len(fields) != 1 or fields[0].lower() not in _MACROS:
            macros = ", ".join(_MACROS)
            raise invalid(f"unknown macro; use one of {macros} or '@every <seconds>'")
    elif len(fields) != 5:
        extra = "; seconds and year fields are not supported" if len(fields) > 5 else ""
        raise invalid(
            f"expected 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}{extra}"
        )
    for item in (item for f in fields for item in f.split(",")):
        if item[:1].lower() in ("h", "r"):
            raise invalid("hashed (H) and random (R) fields are not supported")
        low, dash, high = item.partition("/")[0].partition("-")
        if low and dash and low.lower().lstrip("0") == high.lower().lstrip("0"):
            # croniter reads an equal-ended range as the whole field: "0 3-3 * * *" hourly.
            raise invalid(f"the range {item!r} has equal ends; write {low!r}")
    try:
        cron = croniter(text, _CHECK_FROM, ret_type=datetime, max_years_between_matches=_MAX_YEARS)
    except (ValueError, TypeError, LookupError, ArithmeticError) as exc:
        raise invalid(str(exc) or type(exc).__name__) from exc
    try:
        copy.copy(cron).get_next()
    except CroniterBadDateError as exc:
        raise invalid(f"it never fires (no matching date within {_MAX_YEARS} years)") from exc
    return cron


def _parse_every(text: str) -> float:
    parts = text.split()
    if len(parts) == 2:
        try:
            return float(parts[1])
        except ValueError:
            pass
    raise ValidationError(
        f"invalid interval {text!r}: expected '@every <seconds>', e.g. '@every 300'"
    )


def _interval(every: object, shown: object) -> float:
    if isinstance(every, timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, int | float) and not isinstance(every, bool):
        seconds = float(every)
    else:
        raise ValidationError(f"every= must be a timedelta or seconds, got {shown!r}")
    if not 1 <= seconds <= _MAX_INTERVAL:  # also refuses NaN
        raise ValidationError(f"interval {shown!r} must be between 1 second and 100 years")
    return seconds


def _every_text(seconds: float) -> str:
    return f"@every {int(seconds)}" if seconds.is_integer() else f"@every {seconds!r}"


@lru_cache(maxsize=1024)
def _compiled(expression: str, timezone: str) -> Schedule:
    return Schedule(expression, timezone)


#: Longer expressions are refused before parsing (a huge one would block the event loop).
MAX_EXPRESSION = 256


def compile_schedule(
    expression: str | None = None,
    *,
    every: timedelta | float | None = None,
    timezone: str = "UTC",
) -> Schedule:
    """Validate a cron expression or an interval and return its :class:`Schedule`.

    Args:
        expression: A 5-field cron expression, a macro such as ``"@daily"``, or
            ``"@every <seconds>"`` (the stored form of an interval).
        every: An interval (a timedelta or seconds, at least 1 second) instead of
            ``expression``; ticks are the multiples of it since the Unix epoch.
        timezone: The IANA zone cron ticks are computed in. Defaults to ``"UTC"``.

    Returns:
        The compiled schedule (immutable; equal inputs may share one instance).

    Raises:
        ValidationError: Not exactly one of ``expression`` and ``every`` was given, or
            the expression, interval or zone is invalid (the message says why).
    """
    if (expression is None) == (every is None):
        raise ValidationError("give exactly one of a cron expression or every=")
    if every is not None:
        expression = _every_text(_interval(every, every))
    if not isinstance(expression, str):
        raise ValidationError(f"a cron expression must be a string, got {expression!r}")
    if len(expression) > MAX_EXPRESSION:
        raise ValidationError(
            f"a cron expression is at most {MAX_EXPRESSION} characters, got {len(expression)}"
        )
    if not isinstance(timezone, str) or len(timezone) > MAX_EXPRESSION:
        raise ValidationError(f"invalid time zone {timezone!r:.100}: {_ZONE_HINT}")
    return _compiled(expression, timezone)


def next_tick(expression: str, after: datetime, timezone: str = "UTC") -> datetime:
    """Return the first tick of a schedule strictly after ``after``.

    Args:
        expression: A 5-field cron expression, a macro such as ``"@daily"``, or
            ``"@every <seconds>"``.
        after: An aware datetime (any zone).
        timezone: The IANA zone the expression is evaluated in. Defaults to ``"UTC"``.

    Returns:
        The tick as an aware datetime in UTC (see the module docstring for DST rules).

    Raises:
        ValidationError: ``after`` is naive, or the expression or zone is invalid.
    """
    if not isinstance(after, datetime) or after.utcoffset() is None:
        raise ValidationError(f"after must be an aware datetime, got {after!r}")
    schedule = compile_schedule(expression, timezone=timezone)
    if schedule.interval is not None:
        tick = schedule.next_after(after.timestamp())
    else:
        tick = schedule._cron_next((after - _EPOCH_UTC) // _SECOND)
    return datetime.fromtimestamp(tick, UTC)

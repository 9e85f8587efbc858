"""Backoff policies and the job control signals :class:`Retry`, :class:`Fatal` and
:class:`Snooze` (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from conveyor.durations import Duration, parse_duration
from conveyor.errors import ValidationError

__all__ = ["Backoff", "Fatal", "Retry", "Snooze"]


def _seconds(value: Duration, what: str) -> float:
    return parse_duration(value, what, positive=False)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before the next attempt.

    Build one with :meth:`fixed` or :meth:`exponential`; ``delay(attempt)`` gives the wait
    after the given failed attempt (1-based).
    """

    kind: str
    base: float  # fixed: the wait; exponential: the wait after the first failure
    max: float | None = None
    jitter: bool = False
    factor: float = 2.0  # exponential: each wait is ``factor`` times the one before

    @classmethod
    def fixed(cls, delay: Duration) -> Backoff:
        """Wait the same ``delay`` seconds after every failure."""
        return cls("fixed", _seconds(delay, "Backoff.fixed delay"))

    @classmethod
    def exponential(
        cls,
        delay: Duration = 2.0,
        factor: float = 2.0,
        *,
        max: Duration | None = None,
        jitter: bool = False,
    ) -> Backoff:
        """Wait ``delay * factor**(n-1)`` seconds after failed attempt n (capped at
        ``max``): ``exponential(2)`` waits 2, 4, 8 … s and ``exponential(60)`` 60, 120,
        240 … s (the Bull, Sidekiq and dataqueue meaning). With ``jitter``, a random wait
        between half and all of that, so retries of many jobs spread out."""
        d = _seconds(delay, "Backoff.exponential delay")
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor >= 1:
            raise ValidationError(
                f"Backoff.exponential factor must be a number >= 1, got {factor!r}"
            )
        m = None if max is None else _seconds(max, "Backoff.exponential max")
        return cls("exponential", d, m, jitter, float(factor))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if self.kind == "fixed":
            d = self.base
        else:
            try:
                d = float(self.base * self.factor ** (max(attempt, 1) - 1))
            except OverflowError:
                d = float("inf")
        if self.max is not None:
            d = min(d, self.max)
        d = min(d, 10 * 365 * 86400.0)  # never overflow a timestamp
        if self.jitter:
            d = (rng or random).uniform(d / 2, d)
        return d

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored with the job."""
        return {
            "kind": self.kind,
            "base": self.base,
            "max": self.max,
            "jitter": self.jitter,
            "factor": self.factor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Backoff:
        """Inverse of :meth:`to_dict`."""
        if data.get("kind") not in ("fixed", "exponential"):
            raise ValidationError(f"unknown backoff kind {data.get('kind')!r}")
        return cls(
            str(data["kind"]),
            float(data["base"]),
            data.get("max"),
            bool(data.get("jitter")),
            float(data.get("factor", 2.0)),
        )


DEFAULT_BACKOFF = Backoff.exponential(2.0, max=300.0, jitter=True)


class Retry(Exception):
    """Raise from a handler to retry the job after ``delay`` seconds (default: its backoff).

    The attempt counts; when no attempts remain the job fails.
    """

    def __init__(self, delay: Duration | None = None, message: str = "retry requested"):
        super().__init__(message)
        self.delay = None if delay is None else _seconds(delay, "Retry delay")


class Fatal(Exception):
    """Raise from a handler to fail the job at once, without retrying."""

    def __init__(self, message: str = "fatal"):
        super().__init__(message)
        self.message = message


class Snooze(Exception):
    """Raise from a handler to run the job again after ``delay`` without using up an
    attempt (state ``scheduled``, event ``snoozed``): River's JobSnooze, Oban's snooze.

    ``delay`` is seconds, a ``timedelta`` or a duration string (``"30s"``); 0 requeues
    the job at once."""

    def __init__(self, delay: Duration = 0):
        self.delay = _seconds(delay, "Snooze delay")
        super().__init__(f"snoozed for {self.delay:g}s")

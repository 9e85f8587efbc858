"""Helpers for users' own tests: the real engine in-process, no server needed.

from conveyor.testing import ManualClock, drain, assert_enqueued, inline_queue

queue = inline_queue()                       # conveyor.Queue("sqlite:///:memory:")
...register jobs, call your code...
await assert_enqueued(queue, "send-welcome", payload={"email": "a@b.c"})
await drain(queue)                           # runs everything due, in-process
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from conveyor.clock import from_ts
from conveyor.models import Job, JobState
from conveyor.queue import Queue

__all__ = ["ManualClock", "assert_enqueued", "drain", "inline_queue"]


class ManualClock:
    """A clock that only moves when told: ``clock.advance(seconds)`` / ``clock.set(dt)``.

    Starts at the real current time unless ``start`` (aware datetime or epoch seconds) is
    given. Thread-safe.
    """

    def __init__(self, start: datetime | float | None = None):
        import time

        if isinstance(start, datetime):
            start = start.timestamp()
        self._now = float(start) if start is not None else time.time()
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta) -> None:
        """Move forward (or back, with a negative value: clocks do step back)."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        with self._lock:
            self._now += float(seconds)

    def set(self, when: datetime | float) -> None:
        with self._lock:
            self._now = when.timestamp() if isinstance(when, datetime) else float(when)

    @property
    def datetime(self) -> datetime:
        return from_ts(self.now())  # type: ignore[return-value]


def inline_queue(**kwargs: Any) -> Queue:
    """A queue on ``sqlite:///:memory:``: the real engine, private to this process."""
    return Queue("sqlite:///:memory:", **kwargs)


async def drain(queue: Queue, *, concurrency: int = 10, max_rounds: int = 1000) -> int:
    """Run every job that is due (including jobs those jobs enqueue) until none is left;
    returns how many ran. Jobs scheduled for later stay (move a ManualClock to run them)."""
    total = 0
    for _ in range(max_rounds):
        n = await queue.worker(concurrency=concurrency).run_once()
        total += n
        if n == 0:
            return total
    raise RuntimeError(
        f"drain() still had work after {max_rounds} rounds (a job re-enqueues itself?)"
    )


async def assert_enqueued(
    queue: Queue,
    name: str,
    *,
    payload: Any = ...,
    count: int | None = None,
    state: JobState | str | None = None,
    **fields: Any,
) -> list[Job]:
    """Assert jobs named ``name`` were enqueued (matching ``payload`` and any Job field
    given, e.g. ``tenant="t1"``); returns them. ``count`` checks how many matched."""
    jobs = await queue.list_jobs(name=name, state=state, limit=10_000)
    matched = [
        j
        for j in jobs
        if (payload is ... or j.payload == payload)
        and all(_field_matches(getattr(j, k), v) for k, v in fields.items())
    ]
    if count is None and not matched:
        seen = [(j.id, j.payload, j.state.value) for j in jobs[:10]]
        raise AssertionError(f"no {name!r} job matched; {len(jobs)} with that name: {seen}")
    if count is not None and len(matched) != count:
        raise AssertionError(f"expected {count} {name!r} job(s) to match, found {len(matched)}")
    return list(reversed(matched))


def _field_matches(actual: Any, expected: Any) -> bool:
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        return all(actual.get(k) == v for k, v in expected.items())
    if isinstance(actual, tuple) and isinstance(expected, list):
        return actual == tuple(expected)
    return bool(actual == expected)

"""Job definitions: what ``@queue.job(...)`` registers."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from conveyor.durations import Duration
from conveyor.errors import ValidationError
from conveyor.limits import Limit, Rate
from conveyor.models import JobSpec
from conveyor.retry import Backoff
from conveyor.validation import (
    check_attempts,
    check_backoff,
    check_bool,
    check_max_stalls,
    check_priority,
    check_timeout,
    validate_name,
)

__all__ = ["Enqueuer", "JobDefinition"]


class Enqueuer(Protocol):
    """What a definition enqueues through (the :class:`conveyor.Queue` it belongs to)."""

    async def enqueue_many(
        self, specs: Iterable[JobSpec], *, connection: Any = None
    ) -> list[int]: ...
    def enqueue_many_sync(
        self, specs: Iterable[JobSpec], *, connection: Any = None
    ) -> list[int]: ...


@dataclass(eq=False)
class JobDefinition:
    """A registered job: its handler and defaults. Returned by ``@queue.job(...)``.

    Call ``await definition.enqueue(payload, priority=…, …)`` to enqueue it; calling the
    definition itself runs the handler function directly (handy in unit tests).
    """

    queue: Enqueuer
    name: str
    fn: Callable[..., Any]
    channel: str = "default"
    attempts: int = 1
    max_stalls: int = 1
    backoff: Backoff | None = None
    timeout: float | None = None
    priority: int = 0
    kill_on_timeout: bool = False
    remove_on_complete: bool = False
    remove_on_fail: bool = False
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    allow_overlap: bool = False
    catch_up: timedelta | None = None
    #: Flow control: at most this many running at once (per key value), across workers.
    concurrency: Limit | None = None
    #: Flow control: at most this many starts per window (per key value), across workers.
    rate: Rate | None = None
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        validate_name(self.name, "job name")
        validate_name(self.channel, "channel")
        check_attempts(self.attempts)
        check_max_stalls(self.max_stalls)
        check_priority(self.priority)
        check_bool(self.remove_on_fail, "remove_on_fail")
        check_bool(self.remove_on_complete, "remove_on_complete")
        check_bool(self.kill_on_timeout, "kill_on_timeout")
        if self.backoff is not None:
            check_backoff(self.backoff)
        if self.timeout is not None:
            self.timeout = check_timeout(self.timeout)
        if self.concurrency is not None and not isinstance(self.concurrency, Limit):
            raise ValidationError(
                f"job {self.name!r}: concurrency must be a conveyor.Limit, got {self.concurrency!r}"
            )
        if self.rate is not None and not isinstance(self.rate, Rate):
            raise ValidationError(
                f"job {self.name!r}: rate must be a conveyor.Rate, got {self.rate!r}"
            )
        if not callable(self.fn):
            raise ValidationError(f"job {self.name!r}: handler must be callable")
        if self.cron is not None and self.every is not None:
            raise ValidationError(f"job {self.name!r}: give cron= or every=, not both")
        fn = inspect.unwrap(self.fn)
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
        )

    async def enqueue(
        self,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: Duration | None = None,
        priority: int | None = None,
        channel: str | None = None,
        attempts: int | None = None,
        max_stalls: int | None = None,
        backoff: Backoff | None = None,
        timeout: Duration | None = None,
        kill_on_timeout: bool | None = None,
        remove_on_complete: bool | None = None,
        remove_on_fail: bool | None = None,
        idempotency_key: str | None = None,
        tags: Sequence[str] = (),
        group: str | None = None,
        tenant: str | None = None,
        depends_on: Sequence[int] = (),
        on_dependency_failure: str | None = None,
        unique_for: Duration | None = None,
        unique_states: Sequence[str] | None = None,
        connection: Any = None,
    ) -> int:
        """Enqueue this job; takes every option of :meth:`conveyor.Queue.enqueue`."""
        spec = JobSpec(self.name, payload, run_at=run_at, delay=delay, priority=priority,
                       channel=channel, attempts=attempts, max_stalls=max_stalls, backoff=backoff,
                       timeout=timeout, kill_on_timeout=kill_on_timeout,
                       remove_on_complete=remove_on_complete, remove_on_fail=remove_on_fail,
                       idempotency_key=idempotency_key, tags=tags, group=group,
                       tenant=tenant, depends_on=depends_on,
                       on_dependency_failure=on_dependency_failure, unique_for=unique_for,
                       unique_states=unique_states)  # fmt: skip
        return (await self.queue.enqueue_many([spec], connection=connection))[0]

    def enqueue_sync(
        self,
        payload: Any = None,
        *,
        run_at: datetime | None = None,
        delay: Duration | None = None,
        priority: int | None = None,
        channel: str | None = None,
        attempts: int | None = None,
        max_stalls: int | None = None,
        backoff: Backoff | None = None,
        timeout: Duration | None = None,
        kill_on_timeout: bool | None = None,
        remove_on_complete: bool | None = None,
        remove_on_fail: bool | None = None,
        idempotency_key: str | None = None,
        tags: Sequence[str] = (),
        group: str | None = None,
        tenant: str | None = None,
        depends_on: Sequence[int] = (),
        on_dependency_failure: str | None = None,
        unique_for: Duration | None = None,
        unique_states: Sequence[str] | None = None,
        connection: Any = None,
    ) -> int:
        """Enqueue from sync code; see :meth:`conveyor.Queue.enqueue_sync`."""
        spec = JobSpec(self.name, payload, run_at=run_at, delay=delay, priority=priority,
                       channel=channel, attempts=attempts, max_stalls=max_stalls, backoff=backoff,
                       timeout=timeout, kill_on_timeout=kill_on_timeout,
                       remove_on_complete=remove_on_complete, remove_on_fail=remove_on_fail,
                       idempotency_key=idempotency_key, tags=tags, group=group,
                       tenant=tenant, depends_on=depends_on,
                       on_dependency_failure=on_dependency_failure, unique_for=unique_for,
                       unique_states=unique_states)  # fmt: skip
        return self.queue.enqueue_many_sync([spec], connection=connection)[0]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

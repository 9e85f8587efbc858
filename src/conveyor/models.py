"""Plain frozen dataclasses users see: jobs, specs, events, logs. No I/O here."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from conveyor.durations import Duration
from conveyor.retry import Backoff

__all__ = [
    "TERMINAL_STATES",
    "UPCOMING_STATES",
    "Batch",
    "ChannelInfo",
    "CronSchedule",
    "CronSpec",
    "Event",
    "Job",
    "JobSpec",
    "JobState",
    "LogRecord",
    "PauseState",
    "ThroughputPoint",
    "Token",
    "TokenResult",
    "WorkerInfo",
]


class JobState(enum.StrEnum):
    """The one state vocabulary: enum, SQL CHECK, Redis keys, CLI and dashboard."""

    SCHEDULED = "scheduled"
    """Not yet due: delayed, or waiting out a retry backoff."""
    QUEUED = "queued"
    """Due, waiting for a worker."""
    RUNNING = "running"
    """Claimed by a worker holding a lease."""
    WAITING = "waiting"
    """Suspended in a durable wait (``ctx.sleep`` / ``ctx.wait_for_token``)."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
UPCOMING_STATES = frozenset({JobState.SCHEDULED, JobState.QUEUED, JobState.WAITING})


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job for :meth:`conveyor.Queue.enqueue_many`; takes every enqueue option but
    ``connection``. Options left as None fall back to the job definition's defaults."""

    name: str
    payload: Any = None
    _: KW_ONLY  # the options are keyword-only, typed (editors and mypy check them)
    run_at: datetime | None = None
    delay: Duration | None = None
    priority: int | None = None
    channel: str | None = None
    attempts: int | None = None
    max_stalls: int | None = None
    backoff: Backoff | None = None
    timeout: Duration | None = None
    kill_on_timeout: bool | None = None
    remove_on_complete: bool | None = None
    remove_on_fail: bool | None = None
    idempotency_key: str | None = None
    tags: Sequence[str] = ()
    group: str | None = None
    tenant: str | None = None
    #: Workflows: the jobs this one waits for: ids of stored jobs, or JobSpec objects that
    #: come earlier in the same ``enqueue_many`` / ``enqueue_batch`` call.
    depends_on: Sequence[Any] = ()
    on_dependency_failure: str | None = None  # "cancel" (default) or "run"
    #: Uniqueness windows refining ``idempotency_key``: dedupe only within this long
    #: after the first enqueue, and only while the first job is in these states.
    unique_for: Duration | None = None
    unique_states: Sequence[str] | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A stored job, as returned by :meth:`conveyor.Queue.get_job`.

    ``attempts`` counts runs started (a drained requeue gives its attempt back);
    ``stalls`` counts the runs whose worker died (its lease expired and the job was
    rescued): retries after handler failures are bounded by ``max_attempts`` counted over
    the runs that did not stall (``attempts - stalls``). ``errors`` holds one
    ``{"attempt", "type", "message", "traceback", "at"}`` per failure.
    """

    id: int
    name: str
    payload: Any
    state: JobState
    attempts: int
    stalls: int
    max_attempts: int
    progress: int
    result: Any
    errors: tuple[Mapping[str, Any], ...]
    tags: tuple[str, ...]
    group: str | None
    tenant: str | None
    channel: str
    priority: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timeout: float | None = None
    idempotency_key: str | None = None
    #: The token a ``waiting`` job waits on (None: a sleep, dependencies, or not waiting).
    wait_token: str | None = None
    #: The jobs this one depends on (filled by ``Queue.get_job``).
    depends_on: tuple[int, ...] = ()
    #: Durable steps stored for the job, oldest first: ``{"name", "result", "at"}``
    #: (waits and tokens are steps too, named ``conveyor:wait:N`` / ``conveyor:token:N``).
    #: Filled by ``Queue.get_job``; empty in lists.
    steps: tuple[Mapping[str, Any], ...] = ()
    #: The job's tokens (``ctx.create_token``): ``{"id", "state", "tags", "expires_at",
    #: "created_at", "completed_at", "data"}``. Filled by ``Queue.get_job``.
    tokens: tuple[Mapping[str, Any], ...] = ()

    @property
    def last_error(self) -> Mapping[str, Any] | None:
        """The most recent attempt's error, or None."""
        return self.errors[-1] if self.errors else None


@dataclass(frozen=True, slots=True)
class Event:
    """A lifecycle event (``enqueued``, ``started``, ``completed``, …)."""

    type: str
    job_id: int
    job_name: str
    tenant: str | None
    attempt: int
    at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    #: The event's cursor in the queue-wide log (``queue.events(since=event.id)`` resumes
    #: right after it); None for an event that was never stored (in-process only).
    id: str | None = None


@dataclass(frozen=True, slots=True)
class LogRecord:
    """A line a handler wrote with ``ctx.log``, stored with the job."""

    at: datetime
    level: str
    message: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A schedule for :meth:`conveyor.Queue.sync_cron` / ``add_cron``."""

    name: str
    expression: str | None = None
    job: str | None = None
    payload: Any = None
    timezone: str = "UTC"
    every: timedelta | None = None
    allow_overlap: bool = False
    catch_up: timedelta | None = None
    priority: int | None = None
    attempts: int | None = None
    backoff: Backoff | None = None


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A stored schedule, as listed by :meth:`conveyor.Queue.list_cron`."""

    name: str
    expression: str
    job: str
    payload: Any
    timezone: str
    paused: bool
    allow_overlap: bool
    next_run_at: datetime | None
    last_run_at: datetime | None


@dataclass(frozen=True, slots=True)
class Token:
    """A durable-wait token: ``ctx.create_token`` returns one, ``queue.get_token`` reads one.

    ``state`` is ``pending``, ``completed`` or ``expired``; ``data`` is what
    ``queue.complete_token`` gave it. ``expires_at`` None: it never expires."""

    id: str
    expires_at: datetime | None
    job_id: int | None = None
    state: str = "pending"
    tags: tuple[str, ...] = ()
    created_at: datetime | None = None
    completed_at: datetime | None = None
    data: Any = None


@dataclass(frozen=True, slots=True)
class TokenResult:
    """What ``ctx.wait_for_token`` returns: ``ok=False`` when the token timed out."""

    ok: bool
    data: Any = None


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A running worker, as :meth:`conveyor.Queue.workers` lists it."""

    id: str
    host: str
    pid: int
    channels: tuple[str, ...] | None  # None: every channel
    concurrency: int
    running: tuple[int, ...]  # ids of the jobs it runs now (as of its last heartbeat)
    started_at: datetime
    last_seen: datetime


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """A channel, as :meth:`conveyor.Queue.channels` lists it: its jobs per state (every
    state present), whether workers skip it (paused by name or with every channel), and
    when its longest-waiting due job became due, and its stored limits
    (``queue.set_channel_limits``), if any."""

    name: str
    counts: Mapping[str, int]
    paused: bool
    oldest_queued_at: datetime | None
    limits: Any = None  # its conveyor.ChannelLimits, when it has any stored


@dataclass(frozen=True, slots=True)
class PauseState:
    """What :meth:`conveyor.Queue.pause` paused: every channel, and channels by name."""

    everything: bool
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ThroughputPoint:
    """Jobs that finished in the bucket starting at ``start``
    (:meth:`conveyor.Queue.throughput`)."""

    start: datetime
    completed: int
    failed: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch of jobs (``queue.enqueue_batch``): how many members finished which way, its
    ``state`` (``running``, then ``done`` once every member has finished), and the id of
    its ``on_complete`` job once enqueued."""

    id: str
    total: int
    completed: int
    failed: int
    cancelled: int
    state: str
    created_at: datetime
    callback_job_id: int | None
    job_ids: tuple[int, ...] = ()  # the members, as enqueue_batch returned them

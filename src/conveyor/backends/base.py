"""The Backend protocol: the only seam between conveyor's core and its stores.

The core decides every transition (state, retry time, lease length, cron tick) and passes
``now`` and the outcome; a backend stores and applies it atomically, fenced by "still leased
by this token". Times cross the seam as float epoch seconds; payloads, results and options
as JSON text the backend treats as opaque.

Every backend (sqlite, postgres, redis) implements all of it and passes one conformance
suite (``tests/conformance``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from conveyor.models import CronSchedule, Event, Job, JobState, LogRecord

__all__ = [
    "Backend",
    "CancelOutcome",
    "ChannelStats",
    "ClaimParams",
    "ClaimedJob",
    "CronFire",
    "CronRecord",
    "EnqueueParams",
    "EnqueueResult",
    "ExpiredLease",
    "HeartbeatParams",
    "HeartbeatResult",
    "JobFilter",
    "LogEntry",
    "NewJob",
    "Outcome",
    "RetryOutcome",
]


@dataclass(slots=True)  # not frozen: built per job (4x cheaper); never mutated
class NewJob:
    """A validated job ready to store (built by the core from enqueue options)."""

    name: str
    payload: str  # JSON text
    state: JobState  # QUEUED when due now, SCHEDULED when run_at is in the future
    run_at: float
    priority: int
    channel: str
    max_attempts: int
    options: str | None  # JSON text of per-job overrides (backoff, timeout, ...), opaque
    remove_on_complete: bool
    idempotency_key: str | None
    tags: tuple[str, ...]
    group: str | None
    tenant: str | None


@dataclass(frozen=True, slots=True)
class EnqueueParams:
    jobs: Sequence[NewJob]
    now: float
    connection: Any = None  # the caller's open transaction, backend-specific type


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    id: int
    created: bool  # False when an idempotency key matched an existing job


@dataclass(frozen=True, slots=True)
class ClaimParams:
    """Claim up to ``limit`` due jobs: state queued, ``run_at <= now``, channel/name
    filters, channel not paused (nor everything paused), no other job of the same group running (and at most one
    per group in the batch). Claimed rows become running with ``attempts + 1``,
    ``lease_token = token``, ``lease_expires_at``, ``started_at = now``; a ``started``
    event is stored for each. Order: priority, run_at, id."""

    worker_id: str
    token: str
    limit: int
    now: float
    lease_expires_at: float
    channels: tuple[str, ...] | None = None
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None


@dataclass(slots=True)  # not frozen: built per job (4x cheaper); never mutated
class ClaimedJob:
    id: int
    name: str
    payload: str  # JSON text, decoded by the core (undecodable rows fail cleanly there)
    attempts: int  # including this attempt
    max_attempts: int
    channel: str
    priority: int
    tenant: str | None
    group: str | None
    tags: tuple[str, ...]
    options: str | None
    run_at: float
    created_at: float
    token: str
    remove_on_complete: bool


@dataclass(slots=True)  # not frozen: built per job (4x cheaper); never mutated
class Outcome:
    """A fenced transition of a running job, decided by the core.

    Applied only if the job is still ``running`` with ``lease_token == token`` (and, when
    ``expired_before`` is set, ``lease_expires_at <= expired_before``: a rescue). Else
    it changes nothing and reports False.
    """

    job_id: int
    token: str
    state: JobState  # completed, failed, cancelled, queued, scheduled, waiting
    at: float  # now
    event: str  # event type to store with the transition
    run_at: float | None = None  # for queued/scheduled/waiting
    result: str | None = None  # JSON text, for completed
    error: str | None = None  # JSON text of one error record, appended to errors
    refund_attempt: bool = False  # drained requeue: attempts - 1
    remove: bool = False  # delete the row (remove_on_complete) instead of keeping it
    expired_before: float | None = None
    event_data: str | None = None  # JSON text


@dataclass(frozen=True, slots=True)
class HeartbeatParams:
    jobs: Sequence[tuple[int, str]]  # (job id, lease token)
    now: float
    lease_expires_at: float


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    lost: frozenset[int]  # no longer running under that token: stop caring about them
    cancel_requested: frozenset[int]


@dataclass(frozen=True, slots=True)
class ExpiredLease:
    id: int
    token: str
    name: str
    tenant: str | None
    attempts: int
    max_attempts: int
    options: str | None
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class JobFilter:
    state: JobState | None = None
    name: str | None = None
    channel: str | None = None
    tags: tuple[str, ...] | None = None
    tag_mode: str = "any"  # any | all | exact | none
    tenant: str | None = None
    limit: int = 100
    before_id: int | None = None  # newest first, paging by id


@dataclass(frozen=True, slots=True)
class LogEntry:
    job_id: int
    at: float
    level: str
    message: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Per-channel numbers for the insights job and metrics."""

    channel: str
    counts: Mapping[str, int]  # state value -> jobs (states with none may be absent)
    oldest_queued_run_at: float | None  # run_at of the longest-waiting due job


class CancelOutcome:
    CANCELLED = "cancelled"  # was upcoming, now cancelled
    REQUESTED = "requested"  # running: cancel_requested set, the worker ends it
    FINISHED = "finished"  # already terminal: nothing changed
    MISSING = "missing"


class RetryOutcome:
    OK = "ok"
    MISSING = "missing"
    # otherwise the current state's value, which the core turns into InvalidStateError


@dataclass(frozen=True, slots=True)
class CronRecord:
    """A stored schedule. ``expression`` is a cron expression or ``@every <seconds>``."""

    name: str
    expression: str
    job: str
    payload: str  # JSON text
    timezone: str
    paused: bool
    allow_overlap: bool
    catch_up: float | None
    options: str | None  # JSON text: priority, attempts, backoff
    next_run_at: float | None
    last_run_at: float | None = None
    last_job_id: int | None = None

    def to_schedule(self) -> CronSchedule:
        import json

        from conveyor.clock import from_ts

        return CronSchedule(
            name=self.name,
            expression=self.expression,
            job=self.job,
            payload=json.loads(self.payload),
            timezone=self.timezone,
            paused=self.paused,
            allow_overlap=self.allow_overlap,
            next_run_at=from_ts(self.next_run_at),
            last_run_at=from_ts(self.last_run_at),
        )


@dataclass(frozen=True, slots=True)
class CronFire:
    """Fire one tick: applied only if the schedule's ``next_run_at == expected_next``
    (a compare-and-swap, so any number of processes fire each tick once). Sets
    ``next_run_at = new_next``, ``last_run_at = tick``; stores ``job`` when given (None:
    the tick is skipped, e.g. overlap) and records its id as ``last_job_id``."""

    name: str
    expected_next: float
    new_next: float | None
    tick: float
    job: NewJob | None
    now: float
    extra: Mapping[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """Storage for one queue. All methods are coroutines unless noted."""

    name: str  # "sqlite" | "postgres" | "redis"
    supports_transactions: bool  # connection= on enqueue

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> None: ...
    def migration_sql(self) -> str: ...

    # -- enqueue --------------------------------------------------------------------
    async def enqueue_many(self, params: EnqueueParams) -> list[EnqueueResult]:
        """All or nothing. Idempotency keys (scoped by tenant) return the existing id."""
        ...

    def enqueue_many_sync(self, params: EnqueueParams) -> list[EnqueueResult]:
        """Same, from sync code in the calling thread. Required when
        ``params.connection`` is a sync connection; may raise UnsupportedError otherwise
        (the core then uses its portal thread)."""
        ...

    # -- the hot path -----------------------------------------------------------------
    async def claim(self, params: ClaimParams) -> list[ClaimedJob]: ...
    async def complete_many(self, outcomes: Sequence[Outcome]) -> list[bool]: ...
    async def complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimParams
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """``complete_many(outcomes)`` then ``claim(claim)``, in one round trip (and one
        transaction, where the engine has them): the worker's steady-state cycle, so a
        busy worker pays one round trip per batch instead of two.

        The claim may or may not see what these outcomes changed (a job they requeued,
        a group they freed); when they requeued a job or freed a group, the backend
        makes this process's ``wait_for_work`` return at once, so nothing waits for the
        poll. A failure applies nothing of either part."""
        ...

    async def heartbeat(self, params: HeartbeatParams) -> HeartbeatResult: ...
    async def cancel_requests(self, job_ids: Sequence[int]) -> frozenset[int]:
        """Of these running jobs, those whose cancel was requested (read-only)."""
        ...

    async def set_progress(self, job_id: int, token: str, progress: int, now: float) -> bool: ...
    async def append_logs(self, entries: Sequence[LogEntry]) -> None: ...
    async def wait_for_work(
        self, timeout: float, claim: ClaimParams | None = None
    ) -> list[ClaimedJob]:
        """Return when new work may be due (notification), after ``timeout``, or at once
        after ``wake()``; the caller then claims.

        ``claim`` (optional) is the caller's standing claim for its free slots while it
        waits. A backend that can hand jobs over directly may claim, for the caller,
        due jobs that ``claim(claim)`` would take at the moment of the hand-off (its
        filters, paused channels, free groups, and never ahead of a job a claim would
        take first; at most ``claim.limit`` jobs in all), and then return them. Each
        is claimed exactly as a claim would (running, ``attempts + 1``, ``started_at``
        and a ``started`` event at the hand-off's ``now``) under ``claim.token``, with
        a lease as long as ``claim.lease_expires_at - claim.now``, counted from the
        hand-off. The caller runs them exactly like claimed jobs. Backends without
        hand-off (SQLite, PostgreSQL) return ``[]``.

        Jobs are never lost in a hand-off: they are stored as running, with their lease,
        before they are handed over. If the caller cannot receive them (the wait was
        cancelled, the connection dropped), a later ``wait_for_work`` of this backend
        returns them while their lease holds; otherwise they are rescued when it
        expires, like the jobs of a lost claim reply or of a crashed worker."""
        ...

    def wake(self) -> None:
        """Make this process's current or next ``wait_for_work`` return at once (sync,
        thread-safe)."""
        ...

    # -- maintenance --------------------------------------------------------------------
    async def expired_leases(self, now: float, limit: int) -> list[ExpiredLease]: ...
    async def promote_due(self, now: float, horizon: float, limit: int) -> tuple[int, float | None]:
        """scheduled → queued for ``run_at <= now + horizon``; returns (count, earliest
        run_at among the promoted that is still in the future, or None)."""
        ...

    async def prune(self, state: JobState, finished_before: float, limit: int) -> int:
        """Delete up to ``limit`` jobs in ``state`` finished before the given time (with
        their events and logs); returns how many."""
        ...

    async def acquire_lock(self, name: str, owner: str, ttl: float, now: float) -> bool:
        """Take or renew a named lease; False if another owner holds it unexpired."""
        ...

    async def release_lock(self, name: str, owner: str) -> None: ...

    # -- inspection and management ------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None: ...
    async def list_jobs(self, flt: JobFilter) -> list[Job]: ...
    async def counts(self, channel: str | None) -> dict[str, int]: ...
    async def channel_stats(self) -> list[ChannelStats]:
        """Counts per state and the oldest queued job's run_at, for every channel."""
        ...

    async def cancel(self, job_id: int, now: float) -> str:  # a CancelOutcome value
        ...

    async def cancel_jobs(self, flt: JobFilter, now: float) -> int:
        """Cancel upcoming jobs (scheduled/queued/waiting) matching ``flt``."""
        ...

    async def retry(self, job_id: int, now: float) -> str:  # a RetryOutcome or a state
        ...

    async def set_paused(self, channel: str | None, paused: bool) -> None: ...
    async def paused_channels(self) -> frozenset[str]:
        """Paused channel names; ``""`` (never a valid channel name) means every channel,
        so a channel literally named ``"*"`` is just a channel."""
        ...

    async def get_logs(self, job_id: int) -> list[LogRecord]: ...
    async def get_events(self, job_id: int) -> list[Event]: ...
    async def read_events(
        self, after: str | None, limit: int, timeout: float
    ) -> tuple[list[Event], str]:
        """Events stored after cursor ``after`` (None: only new ones from now), waiting up
        to ``timeout`` for the first; returns them and the new cursor."""
        ...

    # -- cron ---------------------------------------------------------------------------
    async def upsert_cron(self, record: CronRecord) -> None:
        """Create or replace; keeps ``last_run_at`` / ``last_job_id`` of an existing one."""
        ...

    async def list_cron(self) -> list[CronRecord]: ...
    async def delete_cron(self, names: Sequence[str]) -> int: ...
    async def set_cron_paused(self, name: str, paused: bool, next_run_at: float | None) -> bool: ...
    async def fire_cron(self, fire: CronFire) -> tuple[bool, int | None]:
        """(won the compare-and-swap, id of the enqueued job or None)."""
        ...

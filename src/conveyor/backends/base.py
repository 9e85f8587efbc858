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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from conveyor.backends.records import (
    NEVER,
    BatchRecord,
    CancelOutcome,
    ChannelLimitRecord,
    ChannelStats,
    ClaimLimit,
    CronFire,
    CronFireResult,
    CronPause,
    CronRecord,
    LockParams,
    NewBatch,
    NewJob,
    NewToken,
    PausedState,
    PromoteParams,
    PromoteResult,
    PruneParams,
    PruneResult,
    RemovedJob,
    ResumedJob,
    ResumeParams,
    RetryOutcome,
    RetryResult,
    StepRecord,
    StepSave,
    ThroughputBucket,
    ThroughputParams,
    TokenCompletion,
    TokenCompletionResult,
    TokenRecord,
    WorkerRecord,
)
from conveyor.models import Event, Job, JobState, LogRecord

if TYPE_CHECKING:
    from conveyor.settings import Settings

__all__ = [
    "NEVER",
    "RESUMED_BY_TOKEN",
    "RUN_AGAIN",
    "Backend",
    "BatchRecord",
    "CancelOutcome",
    "ChannelLimitRecord",
    "ChannelStats",
    "ClaimLimit",
    "ClaimParams",
    "ClaimedJob",
    "CronFire",
    "CronFireResult",
    "CronPause",
    "CronRecord",
    "EnqueueParams",
    "EnqueueResult",
    "EventPage",
    "EventRead",
    "ExpiredLease",
    "HeartbeatParams",
    "HeartbeatResult",
    "JobFilter",
    "LockParams",
    "LogEntry",
    "NewBatch",
    "NewJob",
    "NewToken",
    "Outcome",
    "PausedState",
    "ProgressUpdate",
    "PromoteParams",
    "PromoteResult",
    "PruneParams",
    "PruneResult",
    "RemovedJob",
    "ResumeParams",
    "ResumedJob",
    "RetryOutcome",
    "RetryResult",
    "StepRecord",
    "StepSave",
    "ThroughputBucket",
    "ThroughputParams",
    "TokenCompletion",
    "TokenCompletionResult",
    "TokenRecord",
    "WorkerRecord",
    "as_stored",
    "stored_as_cancelled",
    "stored_as_resumed",
]


@dataclass(frozen=True, slots=True)
class EnqueueParams:
    jobs: Sequence[NewJob]
    now: float
    connection: Any = None  # the caller's open transaction, backend-specific type
    batch: NewBatch | None = None  # store this batch with the jobs (all or nothing)


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    id: int
    created: bool  # False when an idempotency key matched an existing job


@dataclass(frozen=True, slots=True)
class ClaimParams:
    """Claim up to ``limit`` due jobs: state queued, ``run_at <= now``, channel/name
    filters, channel not paused (nor everything paused), no other job of the same group running (and at most one
    per group in the batch). Claimed rows become running with ``attempts + 1`` (``stalls``
    unchanged), ``lease_token = token``, ``lease_expires_at``, ``started_at = now``; a
    ``started`` event is stored for each. Order: priority, run_at, id.

    ``ordered=False`` (``queue.worker(ordered=False)``, for throughput): any due jobs the
    filters allow, in no particular order; a backend may keep its order where that
    costs nothing. All three do today: SQLite and Redis walk their claim index in order
    anyway, and PostgreSQL's ordered claim is an index walk that stops after the batch
    (a claim without ``ORDER BY`` measured slower, not faster)."""

    worker_id: str
    token: str
    limit: int
    now: float
    lease_expires_at: float
    channels: tuple[str, ...] | None = None
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None
    ordered: bool = True
    #: Flow control: the limits this claim obeys (see :class:`ClaimLimit`).
    limits: tuple[ClaimLimit, ...] = ()
    #: Fairness: ``(channel, "tenant" | "group")`` pairs. The due jobs of such a channel
    #: are claimed round-robin across the values of that column (jobs without one form
    #: one value of their own): every value's first job in claim order before any
    #: value's second, and so on; within a value, priority, run_at, id. Overall order:
    #: (that round, priority, run_at, id), the round being 1 for jobs of other channels.
    fair: tuple[tuple[str, str], ...] = ()


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
    stalls: int  # earlier runs of this job whose worker died (rescued: Outcome.stall)
    max_stalls: int


@dataclass(slots=True)  # not frozen: built per job (4x cheaper); see "What was stored"
class Outcome:
    """A fenced transition of a running job, decided by the core.

    Applied only if the job is still ``running`` with ``lease_token == token`` (and, when
    ``expired_before`` is set, ``lease_expires_at <= expired_before``: a rescue). Else
    it changes nothing and reports False.

    A cancel requested while the job ran (``cancel_requested``, set by
    :meth:`Backend.cancel`) wins over running it again: an outcome to ``queued``,
    ``scheduled`` or ``waiting`` (a retry, a snooze, a drained requeue, a durable wait)
    of such a job is applied as ``cancelled`` instead: ``finished_at = at``, a
    ``cancelled`` event with no data, no ``wait_token``; its error (if any) is still
    appended and its attempt refunded as asked. A cancel that came too late for the
    worker to stop the handler is so never lost, whatever the handler did meanwhile.

    What was stored: when the store applies an outcome as something else than asked
    (that cancel; a wait whose token is no longer waitable, see ``wait_token``), it sets
    the outcome's ``state``, ``event``, ``run_at``, ``event_data`` and ``wait_token`` to
    what it stored before it returns, so the core reports what happened. Nothing else
    ever changes an Outcome.

    Part of every transition, in the same statement or script: the lease is cleared
    (``lease_token``, ``lease_expires_at``, ``worker_id``); ``progress`` becomes 100 on
    ``completed`` and 0 on ``queued`` / ``scheduled`` (the job runs again from the top: a
    drained requeue, a retry, a snooze, a rescue), and is kept otherwise.
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
    #: A rescue of a run whose worker died (maintenance, with ``expired_before``):
    #: ``stalls + 1``, applied atomically with the transition and only if it applies.
    #: ``attempts`` is left as it is (it counts runs started); the core refunds the run
    #: by bounding retries with ``attempts - stalls``.
    stall: bool = False
    #: Delete the row instead of keeping it (``remove_on_complete`` on completion,
    #: ``remove_on_fail`` on a final failure): its logs go with it; its events stay
    #: readable by ``get_events`` and ``read_events`` until pruned.
    remove: bool = False
    expired_before: float | None = None
    event_data: str | None = None  # JSON text
    attempt: int | None = None  # the attempt this ends (for the core's messages; not stored)
    #: For state ``waiting`` (a durable wait; the core also sets ``refund_attempt``):
    #: the token the job now waits on, stored as the job's ``wait_token`` (None: a
    #: sleep). If that token is no longer waitable when this applies (not ``pending``,
    #: or its ``expires_at <= at``), the job goes to ``queued`` at ``run_at = at`` with a
    #: ``resumed`` event instead of waiting (a pending one past its expiry is marked
    #: ``expired``). Checked under the same lock or script as :meth:`Backend.complete_token`
    #: takes, so a completion racing the suspend is never lost.
    wait_token: str | None = None

    @property
    def yields_to_cancel(self) -> bool:
        """Whether a cancel requested while the job ran wins over this outcome (it would
        run the job again: ``queued``, ``scheduled`` or ``waiting``). The store gets it
        with the outcome and applies the rule; it keeps no list of states of its own."""
        return self.state in RUN_AGAIN


#: The event data of a wait stored as a ``resumed`` requeue (its token was done).
RESUMED_BY_TOKEN = '{"reason": "token"}'
#: The states an outcome of a job whose cancel was requested is stored as ``cancelled``.
RUN_AGAIN = frozenset({JobState.QUEUED, JobState.SCHEDULED, JobState.WAITING})


def stored_as_cancelled(outcome: Outcome) -> None:
    """Make ``outcome`` say what the store wrote for it: ``cancelled`` (a cancel requested
    while the job ran wins over running it again; see :class:`Outcome`)."""
    outcome.state, outcome.event = JobState.CANCELLED, "cancelled"
    outcome.run_at = outcome.event_data = outcome.wait_token = None


def stored_as_resumed(outcome: Outcome) -> None:
    """Make ``outcome`` say what the store wrote for it: a wait turned into a ``resumed``
    requeue at ``at``, its token being no longer waitable (``Outcome.wait_token``)."""
    outcome.state, outcome.event = JobState.QUEUED, "resumed"
    outcome.run_at, outcome.event_data, outcome.wait_token = outcome.at, RESUMED_BY_TOKEN, None


def as_stored(outcomes: Sequence[Outcome], changed: Mapping[int, str]) -> None:
    """Make the outcomes a store applied as something else say so: ``changed`` maps an
    outcome's position to ``"cancelled"`` or ``"resumed"`` (see :class:`Outcome`)."""
    for i, what in changed.items():
        (stored_as_cancelled if what == "cancelled" else stored_as_resumed)(outcomes[int(i)])


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
    stalls: int  # earlier runs whose worker died (this one not counted yet)
    max_stalls: int


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
    name_prefix: str | None = None  # names starting with this, literally (no wildcards)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A line a handler wrote, fenced by its attempt's lease token: stored only while the
    job is still ``running`` under ``token`` (see :meth:`Backend.append_logs`)."""

    job_id: int
    token: str  # the lease token of the attempt that wrote it
    at: float
    level: str
    message: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """Set a running job's progress (0..100), fenced by its lease token; a ``progress``
    event is stored with it."""

    job_id: int
    token: str
    progress: int
    now: float


@dataclass(frozen=True, slots=True)
class EventRead:
    """Read stored events after cursor ``after`` (None: only those stored from now on),
    at most ``limit`` (0: none, just the cursor), waiting up to ``timeout`` seconds for
    the first."""

    after: str | None
    limit: int
    timeout: float


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[Event]
    cursor: str  # pass as ``EventRead.after`` to continue


class Backend(Protocol):
    """Storage for one queue. All methods are coroutines unless noted.

    A backend declares what it can do as class attributes, and the core asks them; it
    never branches on ``name`` (which is for messages and logs only).
    """

    name: str  # "sqlite" | "postgres" | "redis": for messages, never for decisions
    #: ``connection=`` on enqueue: the caller's open transaction (sync and async).
    supports_transactions: bool
    #: ``enqueue_many_sync`` works without ``connection=`` in the calling thread, with no
    #: event loop and without ``connect()`` first (it connects by itself).
    sync_enqueue: bool
    #: One connected instance serves every event loop and thread of the process; the
    #: core then keeps a single instance instead of one per loop.
    shared_across_loops: bool
    #: ``wait_for_work`` may claim due jobs for the caller's standing claim and return
    #: them (a direct hand-off); without it, it always returns ``[]``.
    hands_off: bool

    def __init__(self, settings: Settings) -> None:
        """Build, unconnected: nothing is opened before :meth:`connect` (or the first
        sync enqueue, for ``sync_enqueue`` backends)."""
        ...

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self) -> None: ...
    def migration_sql(self) -> str:
        """The schema as SQL a DBA can apply (sync; ``""`` where there is none)."""
        ...

    # -- enqueue --------------------------------------------------------------------
    async def enqueue_many(self, params: EnqueueParams) -> list[EnqueueResult]:
        """All or nothing. Idempotency keys (scoped by tenant) return the existing id."""
        ...

    def enqueue_many_sync(self, params: EnqueueParams) -> list[EnqueueResult]:
        """Same, from sync code in the calling thread. Required when
        ``params.connection`` is a sync connection (``supports_transactions``), and
        without one when ``sync_enqueue``; otherwise raises UnsupportedError (the core
        then uses its portal thread)."""
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

    async def set_progress(self, update: ProgressUpdate) -> bool:
        """False (and nothing changed) when the job is not running under that token."""
        ...

    async def append_logs(self, entries: Sequence[LogEntry]) -> None:
        """Store handler log lines, in order, each fenced like an :class:`Outcome`: a
        line is stored only while its job is ``running`` with ``lease_token ==
        entry.token``; the others (a stale worker's, a finished or removed job's, an
        unknown job's) are dropped silently. One statement or script for the batch."""
        ...

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
        ``hands_off`` return ``[]``.

        Jobs are never lost in a hand-off: they are stored as running, with their lease,
        before they are handed over. A standing claim lasts at most the wait and half
        the lease it hands out. If the caller cannot receive them (the wait was
        cancelled, the connection dropped), the end of its wait (or a later
        ``wait_for_work``) collects every job still running under its token, with the
        lease renewed; ``close()`` gives back (queued, attempt refunded) what it never
        received; otherwise they are rescued when the lease expires, like the jobs of a
        lost claim reply or of a crashed worker."""
        ...

    def wake(self) -> None:
        """Make this process's current or next ``wait_for_work`` return at once (sync,
        thread-safe)."""
        ...

    # -- maintenance --------------------------------------------------------------------
    async def expired_leases(self, now: float, limit: int) -> list[ExpiredLease]:
        """Running jobs whose ``lease_expires_at <= now`` (read-only; the core decides
        and applies each rescue as a fenced :class:`Outcome`)."""
        ...

    async def promote_due(self, params: PromoteParams) -> PromoteResult: ...
    async def prune(self, params: PruneParams) -> PruneResult:
        """Delete as :class:`PruneParams` says, in one statement or script; the jobs
        deleted (their events go with them, so the core emits ``removed`` in-process)."""
        ...

    async def acquire_lock(self, params: LockParams) -> bool:
        """Take or renew a named lease; False if another owner holds it unexpired."""
        ...

    # -- inspection and management ------------------------------------------------------
    async def get_job(self, job_id: int, tenant: str | None = None) -> Job | None:
        """The job, or None. With ``tenant``, None also when the job is another tenant's
        (or has none), decided without loading its payload."""
        ...

    async def list_jobs(self, flt: JobFilter) -> list[Job]: ...
    async def counts(self, channel: str | None) -> dict[str, int]:
        """Jobs per state value, every state present (zero included)."""
        ...

    async def channel_stats(self) -> list[ChannelStats]:
        """Counts per state and the oldest queued job's run_at, for every channel."""
        ...

    async def cancel(self, job_id: int, now: float) -> CancelOutcome: ...
    async def cancel_jobs(self, flt: JobFilter, now: float) -> int:
        """Cancel upcoming jobs (scheduled/queued/waiting) matching ``flt``."""
        ...

    async def retry(self, job_id: int, now: float) -> RetryResult: ...
    async def set_paused(self, channel: str | None, paused: bool) -> None:
        """Pause or resume one channel, or every channel (``None``).

        One contract on every backend: ``set_paused(None, True)`` pauses every channel,
        also channels that do not exist yet; ``set_paused(None, False)`` resumes
        everything (the every-channel pause and each channel's own); resuming one channel
        while every channel is paused leaves it paused. Any valid name is just a
        channel (``"*"`` included)."""
        ...

    async def get_logs(self, job_id: int) -> list[LogRecord]: ...
    async def get_events(self, job_id: int) -> list[Event]: ...
    async def read_events(self, params: EventRead) -> EventPage: ...

    # -- durable execution (steps, waits, tokens; see conveyor.backends.records) ---------
    async def save_step(self, save: StepSave) -> bool:
        """Store a step (and its token, if any) as :class:`StepSave` says; False (nothing
        stored) when the job is not running under that lease token."""
        ...

    async def load_steps(self, job_id: int) -> list[StepRecord]:
        """The job's stored steps, in the order they were stored."""
        ...

    async def complete_token(self, completion: TokenCompletion) -> TokenCompletionResult: ...
    async def get_token(self, token_id: str) -> TokenRecord | None: ...
    async def list_tokens(self, job_id: int) -> list[TokenRecord]:
        """The job's tokens, oldest first."""
        ...

    async def resume_due(self, params: ResumeParams) -> list[ResumedJob]: ...

    # -- the operations surface: worker registry, pause state, throughput, delete --------
    async def register_worker(self, record: WorkerRecord) -> None:
        """Create or replace the record of worker ``record.id`` (also its heartbeat)."""
        ...

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker (a clean stop); unknown ids are ignored."""
        ...

    async def list_workers(self, now: float) -> list[WorkerRecord]:
        """Workers whose ``expires_at > now``, by ``started_at`` then id."""
        ...

    async def paused_state(self) -> PausedState: ...
    async def throughput(self, params: ThroughputParams) -> list[ThroughputBucket]: ...
    async def delete_jobs(self, job_ids: Sequence[int], now: float) -> list[RemovedJob]:
        """Delete these jobs unless running (those, and unknown ids, are skipped), with
        their events, logs, steps and tokens, as :meth:`prune` deletes; what was deleted."""
        ...

    # -- workflows -----------------------------------------------------------------------
    async def dependency_results(self, job_id: int) -> dict[int, str | None]:
        """The results (JSON text; None when the dependency is gone or has none) of the
        jobs ``job_id`` depends on, by id."""
        ...

    async def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    # -- flow control --------------------------------------------------------------------
    async def set_channel_limits(self, record: ChannelLimitRecord) -> None:
        """Store (replace) a channel's limits; a record with every limit None deletes it."""
        ...

    async def list_channel_limits(self) -> list[ChannelLimitRecord]:
        """Every stored channel limit record, by channel."""
        ...

    # -- cron ---------------------------------------------------------------------------
    async def upsert_cron(self, record: CronRecord) -> None:
        """Create or replace; keeps ``last_run_at`` / ``last_job_id`` of an existing one."""
        ...

    async def list_cron(self) -> list[CronRecord]: ...
    async def delete_cron(self, names: Sequence[str]) -> int: ...
    async def set_cron_paused(self, params: CronPause) -> bool:
        """False when there is no such schedule."""
        ...

    async def fire_cron(self, fire: CronFire) -> CronFireResult: ...

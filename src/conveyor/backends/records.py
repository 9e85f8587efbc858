"""Records that cross the Backend seam for cron schedules and durable execution (steps,
waits and tokens). Re-exported by :mod:`conveyor.backends.base`, which holds the
protocol; split out only to keep each module small.

Durable execution in one paragraph (DESIGN.md "Durable multi-step jobs"): a running job
stores each completed step's JSON result (:class:`StepSave`, fenced by its lease token);
a handler that sleeps or waits for a token ends its attempt with an :class:`Outcome`
to state ``waiting`` (the attempt refunded), its ``run_at`` the time to wake (a sleep's
end, a token's expiry, or :data:`NEVER`). Waiting jobs are never in the claim index.
:meth:`Backend.resume_due` moves due waiting jobs back to ``queued`` (expiring the token
they wait on, if still pending); :meth:`Backend.complete_token` completes a pending
token and resumes the job waiting on it, in the same transaction or script. The job then
runs again from the top, its steps replaying from storage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from conveyor.clock import NEVER
from conveyor.limits import rate_span
from conveyor.models import CronSchedule, JobState

__all__ = [
    "NEVER",
    "BatchRecord",
    "CancelOutcome",
    "ChannelLimitRecord",
    "ChannelStats",
    "ClaimLimit",
    "CronFire",
    "CronFireResult",
    "CronPause",
    "CronRecord",
    "LockParams",
    "NewBatch",
    "NewJob",
    "NewToken",
    "PausedState",
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
    max_stalls: int = 1  # rescues that requeue it (the core's rule); one more fails it
    #: Deleted when it finally fails. The core reads this from ``options`` (where the
    #: core put it); a backend needs it only where a job's row stands for its
    #: ``enqueued`` event: as for ``remove_on_complete``, that event must outlive the row.
    remove_on_fail: bool = False
    #: Workflows (see :mod:`conveyor.backends.records`, "Workflows"): the jobs this one
    #: waits for: an id >= 1 is a stored job; ``-k`` is the k-th job (1-based) of the same
    #: ``EnqueueParams.jobs``, always an earlier one.
    depends_on: tuple[int, ...] = ()
    on_dependency_failure: str = "cancel"  # or "run"
    batch_id: str | None = None  # member of this batch (``EnqueueParams.batch``)
    #: Uniqueness windows, refining ``idempotency_key`` (River's UniqueOpts): the key
    #: dedupes only while the first job was created less than ``unique_for`` seconds ago,
    #: and (``unique_states``) only while it is in one of those states.
    unique_for: float | None = None
    unique_states: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class CronPause:
    """Pause or resume schedule ``name``; ``next_run_at`` replaces the stored next tick
    when given (a resumed schedule continues from its next future tick)."""

    name: str
    paused: bool
    next_run_at: float | None


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


@dataclass(frozen=True, slots=True)
class CronFireResult:
    won: bool  # this call won the compare-and-swap (the tick is this caller's)
    job_id: int | None  # the job stored for the tick, or None (skipped, or lost the CAS)


# -- durable execution -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StepRecord:
    """A stored step of a job: its name, its result (JSON text) and when it was stored."""

    name: str
    result: str
    at: float


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token to store with a step (``ctx.create_token``): pending, for the step's job."""

    id: str
    expires_at: float | None  # None: never expires
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StepSave:
    """Store step ``name`` of a running job with ``result`` (JSON text), fenced like an
    :class:`~conveyor.backends.base.Outcome`: only while the job is ``running`` with
    ``lease_token == token``. A step of that name already stored is kept as it is (the
    first result stands; the call still reports True if the fence holds). With
    ``new_token``, that token is stored (pending, ``job_id``, ``created_at = at``) in the
    same transaction or script, so a step and its token exist together or not at all."""

    job_id: int
    token: str
    name: str
    result: str
    at: float
    new_token: NewToken | None = None


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored token. ``state`` is ``pending``, ``completed`` or ``expired`` as stored;
    a pending token whose ``expires_at`` has passed is expired for every purpose (the
    core reports it so; :meth:`Backend.complete_token` refuses it) until
    :meth:`Backend.resume_due` or a wait marks it."""

    id: str
    job_id: int
    state: str
    data: str | None  # JSON text given to complete_token
    tags: tuple[str, ...]
    expires_at: float | None
    created_at: float
    completed_at: float | None


@dataclass(frozen=True, slots=True)
class TokenCompletion:
    """Complete token ``id`` with ``data`` (JSON text): applied only while it is
    ``pending`` and ``expires_at`` is None or > ``now`` (state ``completed``,
    ``completed_at = now``). In the same transaction or script, the job waiting on it (state
    ``waiting`` with ``wait_token == id``) becomes ``queued`` at ``run_at = now`` with
    ``wait_token`` cleared and a ``resumed`` event stored (data ``{"reason": "token"}``).
    Race-free against the job's own suspend (see :class:`~conveyor.backends.base.Outcome`
    ``wait_token``): a token completed while its job is still running resumes it once it
    suspends, never leaves it waiting."""

    id: str
    data: str
    now: float


@dataclass(frozen=True, slots=True)
class TokenCompletionResult:
    completed: bool  # False: unknown, expired or already completed (nothing changed)
    job_id: int | None = None  # the token's job, when completed
    resumed: bool = False  # the job was waiting on it and is now queued
    job_name: str | None = None  # for the ``resumed`` event the core emits in-process
    tenant: str | None = None
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class ResumeParams:
    """Resume up to ``limit`` waiting jobs with ``run_at <= now``: state ``queued``,
    ``run_at = now``, ``wait_token`` cleared, a ``resumed`` event stored (data
    ``{"reason": "due"}``, or ``{"reason": "expired", "token": id}`` when it waited on a
    token). A token such a job waited on that is still ``pending`` becomes ``expired``
    in the same transaction or script. Each job is resumed once however many processes
    call this at the same moment."""

    now: float
    limit: int


@dataclass(frozen=True, slots=True)
class ResumedJob:
    """A job :meth:`Backend.resume_due` resumed (what its ``resumed`` event names)."""

    id: int
    name: str
    tenant: str | None
    attempts: int
    expired_token: str | None = None  # the token it waited on, expired by this call


# -- the operations surface: worker registry, pause state, throughput -------------------------
@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A running worker as it registers itself (:meth:`Backend.register_worker`), with an
    expiry: a worker that dies without saying goodbye is no longer listed once
    ``expires_at`` has passed (its lease), never later."""

    id: str
    host: str
    pid: int
    channels: tuple[str, ...] | None  # None: every channel
    concurrency: int
    running: tuple[int, ...]  # ids of the jobs it runs now
    started_at: float
    last_seen: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class PausedState:
    """What is paused: every channel (``everything``), and the channels paused by name."""

    everything: bool
    channels: frozenset[str]


@dataclass(frozen=True, slots=True)
class ThroughputParams:
    """Count the jobs that finished in ``[since, since + buckets * bucket)`` by
    ``finished_at``, per bucket of ``bucket`` seconds (bucket i covers ``[since + i *
    bucket, since + (i + 1) * bucket)``), per final state (completed, failed,
    cancelled). Only jobs still stored count: a removed job is not counted."""

    since: float
    bucket: float
    buckets: int


@dataclass(frozen=True, slots=True)
class ThroughputBucket:
    """One bucket with any finished job in it (buckets with none may be left out)."""

    index: int
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


# -- flow control: limits and fairness ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ClaimLimit:
    """A limit every claim obeys (the core builds them from the job definitions' ``Limit``
    / ``Rate`` and the stored channel limits, and passes them in ``ClaimParams.limits``).

    Scope: ``scope == "name"``: the jobs named ``target``; ``"channel"``: the jobs of
    channel ``target``. ``key`` None: all of them share one count; ``"group"`` /
    ``"tenant"``: one count per value of the job's group / tenant (jobs without one
    share one count of their own).

    - **Concurrency** (``per`` is None): a job in scope is claimed only while fewer than
      ``n`` jobs in its scope and key value are ``running`` (the jobs this claim takes
      count as they are taken). Running jobs are counted from the store, so a slot held
      by a worker that died is free again as soon as its job is rescued.
      A ``scope="name"`` concurrency limit with ``key="group"`` replaces the one-running-
      per-group rule for the jobs of that name: up to ``n`` of them run per group.
    - **Rate** (``per`` set, seconds): a job in scope is claimed only while fewer than
      ``n`` jobs in its scope and key value started in ``(now - per, now]`` (a sliding
      window). Every claimed job records one start for each rate limit it falls under,
      at the claim's ``now``, in the same transaction or script as the claim; a start is
      never given back. A start recorded at any time later than ``now`` (another
      worker's clock) counts too. The starts may be kept per span instead of one by
      one: a start at ``t`` is added to the count of the span ``[s, s + w)`` with
      ``w = conveyor.limits.rate_span(per)`` and ``s = floor(t / w) * w``, which also
      keeps its latest start, and a span counts in full while that latest start is
      later than ``now - per`` (every start of the span is then still in the window or
      just left it). That never counts a start too few (the limit is never exceeded),
      frees the window exactly ``per`` after a burst at one instant, and costs a claim
      one row per span and key value instead of one per start; a job may start up to
      ``w`` later than an exact count would let it. Starts (or spans) whose latest
      start is older than ``now`` minus the longest window and a second of slack (for
      workers whose clock is behind, which still count them) may be deleted.

    A job that a limit holds back stays ``queued`` (no attempt used) and the claim goes
    on with the next allowed job in claim order: no slot stays idle while an allowed
    job is due, however many held-back jobs come first in claim order (at least 100,000
    of one full key must not make a claim return short or slow: skip full keys through
    an index, not one row at a time)."""

    scope: str  # "name" | "channel"
    target: str
    key: str | None
    n: int
    per: float | None = None

    @property
    def span(self) -> float | None:
        """How long a span of this rate's start log lasts (``rate_span(per)``); None for
        a concurrency limit."""
        return None if self.per is None else rate_span(self.per)


@dataclass(frozen=True, slots=True)
class ChannelLimitRecord:
    """A channel's stored limits (``queue.set_channel_limits``); all None: none stored
    (:meth:`Backend.set_channel_limits` then deletes the record)."""

    channel: str
    concurrency: int | None = None
    rate_n: int | None = None
    rate_per: float | None = None
    fair_by: str | None = None  # "tenant" | "group"


# -- workflows: dependencies, batches, uniqueness windows ------------------------------------
#
# Dependencies (``NewJob.depends_on``). At enqueue, in the same transaction or script:
# an id that names no stored job refuses the whole enqueue with ``ValidationError``
# ("unknown dependency ids […]") and stores nothing. The job's edges (dependent,
# dependency) are stored. If every dependency is ``completed``, the job is stored as its
# ``state`` says. If one is ``failed`` or ``cancelled`` (or deleted), the dependency has
# failed (below). Otherwise the job is stored ``waiting`` (``wait_token`` None, its
# ``run_at`` kept for later), waiting for the unfinished ones.
#
# When a job reaches ``completed``, ``failed`` (finally, not a retry) or ``cancelled`` by
# any path (complete_many / complete_and_claim, cancel, cancel_jobs, a rescue that fails
# it), or an unfinished job is deleted, each job waiting on it is updated in the same
# transaction or script:
# - completed (or failed/cancelled/deleted with the dependent's ``on_dependency_failure
#   == "run"``): one dependency fewer to wait for; at none, the dependent becomes
#   ``queued`` (``scheduled`` if its ``run_at`` is still ahead) with a ``resumed`` event
#   ``{"reason": "dependencies"}``;
# - failed, cancelled or deleted (``on_dependency_failure == "cancel"``): the dependent
#   becomes ``cancelled`` (``finished_at`` now) with a ``cancelled`` event ``{"reason":
#   "dependency_failed", "dependency": id}``, and that cancellation cascades to its own
#   dependents the same way, to any depth.
# Each waiting dependent is resolved exactly once. A job with dependents should carry a
# cheap marker so that completing a job without dependents costs nothing more.
# Retention, ``clean()`` and delete remove a job's edges with it.
#
# Batches (``EnqueueParams.batch``). The batch row is stored with its member jobs (each
# ``batch_id``), all or nothing. Each time a member reaches ``completed``, ``failed``
# (finally) or ``cancelled`` by any path (or an unfinished member is deleted: counted as
# cancelled), the batch's matching counter goes up in the same transaction or script;
# the transition that brings ``completed + failed + cancelled`` to ``total`` marks the
# batch ``done`` and stores its ``callback`` job, once, with ``"batch": {"id", "total",
# "completed", "failed", "cancelled"}`` merged into the callback's ``options`` JSON, and
# records its id as ``callback_job_id``. A member that will be retried has not finished.
# The batch row is deleted with its callback job (retention, ``clean()``, delete).
#
# Uniqueness windows (``NewJob.unique_for`` / ``unique_states``). When the idempotency
# key matches a stored job and that job was created at or before ``now - unique_for``,
# or ``unique_states`` is given and its state is not among them, the stored job gives up
# the key (its ``idempotency_key`` becomes NULL; nothing else about it changes) and the
# new job is created with it, in the same transaction or script. Otherwise the match
# returns the existing id (``created=False``) as today.


@dataclass(frozen=True, slots=True)
class NewBatch:
    """A batch to store with its members (``queue.enqueue_batch``)."""

    id: str
    total: int
    callback: NewJob | None  # enqueued once every member has finished


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A stored batch: its counters, ``state`` (``running`` or ``done``), and its callback
    job's id once stored."""

    id: str
    total: int
    completed: int
    failed: int
    cancelled: int
    state: str
    created_at: float
    callback_job_id: int | None


# -- management and maintenance: results of cancel/retry, stats, promote, prune, locks ------
@dataclass(frozen=True, slots=True)
class ChannelStats:
    """Per-channel numbers for the insights job and metrics."""

    channel: str
    counts: Mapping[str, int]  # state value -> jobs (states with none may be absent)
    oldest_queued_run_at: float | None  # run_at of the longest-waiting due job


class CancelOutcome(StrEnum):
    """What :meth:`Backend.cancel` did."""

    CANCELLED = "cancelled"  # was upcoming (scheduled, queued, waiting): now cancelled
    REQUESTED = "requested"  # running: cancel_requested is set; its worker ends it
    FINISHED = "finished"  # already completed, failed or cancelled: nothing changed
    MISSING = "missing"  # no such job


class RetryOutcome(StrEnum):
    """What :meth:`Backend.retry` did."""

    RETRIED = "retried"  # was failed or cancelled: now queued with fresh attempts
    MISSING = "missing"  # no such job
    NOT_RETRYABLE = "not_retryable"  # in another state (``RetryResult.state``): unchanged


@dataclass(frozen=True, slots=True)
class RetryResult:
    outcome: RetryOutcome
    state: JobState | None = None  # the job's state when NOT_RETRYABLE


@dataclass(frozen=True, slots=True)
class PromoteParams:
    """scheduled → queued for every job with ``run_at <= now + horizon`` (at most
    ``limit``)."""

    now: float
    horizon: float
    limit: int


@dataclass(frozen=True, slots=True)
class PromoteResult:
    count: int  # jobs promoted
    earliest_future: float | None  # earliest run_at among them still after ``now``


@dataclass(frozen=True, slots=True)
class PruneParams:
    """Delete up to ``limit`` jobs in ``state`` whose ``finished_at < finished_before``,
    with their events and logs."""

    state: JobState
    finished_before: float
    limit: int


@dataclass(frozen=True, slots=True)
class RemovedJob:
    """A job :meth:`Backend.prune` deleted: what its ``removed`` event names."""

    id: int
    name: str
    tenant: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :meth:`Backend.prune` deleted, read in the same statement or script that
    deleted it (``RETURNING`` on SQL), so the core can emit a ``removed`` event each."""

    removed: Sequence[RemovedJob] = ()

    @property
    def count(self) -> int:
        return len(self.removed)


@dataclass(frozen=True, slots=True)
class LockParams:
    """Take or renew the named lease ``name`` for ``owner`` until ``now + ttl``."""

    name: str
    owner: str
    ttl: float
    now: float

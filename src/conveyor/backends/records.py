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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from conveyor.clock import NEVER
from conveyor.models import CronSchedule

if TYPE_CHECKING:
    from conveyor.backends.base import NewJob

__all__ = [
    "NEVER",
    "CronFire",
    "CronFireResult",
    "CronPause",
    "CronRecord",
    "NewToken",
    "PausedState",
    "ResumeParams",
    "ResumedJob",
    "StepRecord",
    "StepSave",
    "ThroughputBucket",
    "ThroughputParams",
    "TokenCompletion",
    "TokenCompletionResult",
    "TokenRecord",
    "WorkerRecord",
]


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

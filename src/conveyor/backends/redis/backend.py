"""The Redis backend: redis-py (asyncio) and one Lua script per state transition.

Layout and encodings are documented in :mod:`conveyor.backends.redis.keys`; every script
in ``scripts/`` names its KEYS and ARGV in a header comment. In short:

* a job is a HASH; ids come from ``INCR``;
* queued jobs sit in a ZSET per channel whose score is the priority and whose member is
  ``order_key(run_at) + zero-padded id``, so ``ZRANGE`` order is exactly priority, then
  run_at, then id (no float rounding: see :func:`~conveyor.backends.redis.keys.order_key`);
* scheduled jobs in a ZSET by run_at, waiting jobs (durable waits) in another, running
  jobs in a ZSET by lease expiry, finished jobs in a ZSET per state by finished_at, plus
  an id-ordered ZSET per state;
* a group's queued members wait in their own ZSET and only the first one sits in a ready
  set while no member runs, so claims never scan past a busy group.

Decisions (next state, retry time, lease length, cron tick) come from the core with
``now``; scripts only apply them, fenced by the lease token. Redis' own clock is never
used, so tests can drive time with a manual clock.

Delivery of wake-ups: enqueue and every other move into ``queued`` ``ZADD`` a marker
(one for every worker, one per channel); ``wait_for_work`` blocks in ``BZPOPMIN`` on a
dedicated connection (see :mod:`conveyor.backends.redis.wakeup`). An idle worker's wait
also registers a standing claim, which an enqueue serves directly: a new due job that the
worker's claim would take right now is stored as claimed by it in the enqueue's script
and handed over in the pop's reply (see :mod:`conveyor.backends.redis.handoff`).

Pauses: every channel's pause is a key of its own (``P paused_all``), apart from the set
of paused channels, so a channel literally named ``*`` is just a channel; claims and
hand-offs read both.

Connections (:mod:`conveyor.backends.redis.connections`): script calls, the hot path,
run on the backend's own lean connections (:mod:`conveyor.backends.redis.lane`); blocking
reads on dedicated ones; the remaining commands (reads, pipelines) through a redis-py
client and its pool.

Not supported: ``connection=`` (a Redis script cannot join the caller's SQL
transaction), which raises :class:`~conveyor.errors.UnsupportedError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio.client import Pipeline

from conveyor.backends.base import (
    CancelOutcome,
    ChannelStats,
    ClaimedJob,
    ClaimParams,
    CronFire,
    CronFireResult,
    CronPause,
    CronRecord,
    EnqueueParams,
    EnqueueResult,
    EventPage,
    EventRead,
    ExpiredLease,
    HeartbeatParams,
    HeartbeatResult,
    JobFilter,
    LockParams,
    LogEntry,
    Outcome,
    ProgressUpdate,
    PromoteParams,
    PromoteResult,
    PruneParams,
    PruneResult,
    RetryResult,
)
from conveyor.backends.redis import codec
from conveyor.backends.redis.connections import Connections
from conveyor.backends.redis.durable import DurableVerbs
from conveyor.backends.redis.handoff import HandOff
from conveyor.backends.redis.inflight import InFlight
from conveyor.backends.redis.keys import Keys, order_key
from conveyor.backends.redis.lane import Lane
from conveyor.backends.redis.ops import OpsVerbs
from conveyor.backends.redis.scripts import Scripts
from conveyor.backends.redis.stream import EventStream
from conveyor.backends.redis.wakeup import Waker
from conveyor.backends.redis.workflows import WorkflowVerbs, uses_workflows
from conveyor.errors import BackendError, UnsupportedError
from conveyor.models import UPCOMING_STATES, Event, Job, JobState, LogRecord
from conveyor.settings import Settings

__all__ = ["RedisBackend"]

LOCK_GRACE_MS = 60_000
"""How long (real time) a lock record outlives its expiry before Redis drops it."""

_NO_TRANSACTIONS = (
    "Redis cannot enqueue inside your transaction: connection= needs the SQLite or "
    "PostgreSQL backend (a Redis script cannot join a database transaction)"
)
_NOT_CONNECTED = "the Redis backend is not connected (call connect() first)"
_STATES = tuple(str(s) for s in JobState)


class RedisBackend(DurableVerbs, OpsVerbs, WorkflowVerbs):
    """Storage for one queue on Redis (``redis://`` or ``rediss://``, db from the path).
    The durable-execution verbs (steps, tokens, resume_due) come from
    :class:`~conveyor.backends.redis.durable.DurableVerbs`, the operations surface
    (worker registry, pause state, throughput, delete) from
    :class:`~conveyor.backends.redis.ops.OpsVerbs`, the workflow verbs (dependencies,
    batches) from :class:`~conveyor.backends.redis.workflows.WorkflowVerbs`.

    Args:
        settings: the queue's settings; uses ``url``, ``prefix`` (keys live under the
            hash tag ``{prefix}``), ``poll_interval`` (pause after a failed wait) and
            ``keep_completed`` (how long a removed job's events are kept).
    """

    name = "redis"
    #: a Redis script cannot join the caller's SQL transaction
    supports_transactions = False
    #: no synchronous client: the core enqueues from sync code through its portal thread
    sync_enqueue = False
    #: redis-py's asyncio connections belong to the loop that made them
    shared_across_loops = False
    #: an enqueue claims a due job for a waiting worker and hands it over in the reply
    hands_off = True

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._keys = Keys(settings.prefix)
        # how long the events of a job removed on completion are kept (seconds, >= 1)
        keep = min(settings.keep_completed, 365 * 86400.0)  # "forever": a year of events
        self._keep_removed_events = str(max(int(keep), 1))
        self._scripts = Scripts()
        self._conns: Connections | None = None
        self._lane: Lane | None = None  # the connections' lane: the hot path's shortcut
        self._waker: Waker | None = None
        self._stream: EventStream | None = None
        # channels this process's workers claim from; None = every channel
        self._wait_channels: set[str] | None = set()
        # outcome writes in flight, so that a heartbeat tells them from lost leases
        self._inflight = InFlight()

    # -- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Create the connections, check ``maxmemory-policy`` (a loud warning unless it
        is ``noeviction``) and load the scripts. Raises BackendError when Redis does not
        answer; the backend can then be connected again later."""
        if self._conns is not None:
            return
        conns = self._conns = Connections(self._settings.url, self._scripts, self._keys)
        self._lane = conns.lane
        hand = HandOff(conns.lane, self._keys)
        self._waker = Waker(conns.new_connection, conns.unblock, self._settings.poll_interval, hand)
        self._waker.bind(asyncio.get_running_loop())
        self._stream = EventStream(self._keys.stream, conns.new_connection)
        try:
            await conns.check()
        except BaseException:
            await self.close()  # so that a later connect() starts over
            raise

    async def close(self) -> None:
        """Close every connection; the backend cannot be used afterwards."""
        if self._waker is not None:
            await self._waker.close()  # may release a standing claim through the lane
        if self._stream is not None:
            await self._stream.close()
        conns, self._conns = self._conns, None
        self._lane = self._waker = self._stream = None
        if conns is not None:
            await conns.close()

    async def migrate(self) -> None:
        """Nothing to migrate: keys are created on first use. Loads the scripts."""
        await self._require().load_scripts("migrate")

    def migration_sql(self) -> str:
        """Redis has no schema; this says so (for ``conveyor migrate --sql``)."""
        return "-- Redis needs no migration: conveyor's keys are created on first use.\n"

    # -- plumbing -------------------------------------------------------------------------

    def _require(self) -> Connections:
        if self._conns is None:
            raise BackendError(_NOT_CONNECTED)
        return self._conns

    def _require_lane(self) -> Lane:
        if self._lane is None:
            raise BackendError(_NOT_CONNECTED)
        return self._lane

    async def _script(self, name: str, *args: str) -> Any:
        return await self._require_lane().script(name, args)

    # -- enqueue --------------------------------------------------------------------------

    async def enqueue_many(self, params: EnqueueParams) -> list[EnqueueResult]:
        """All or nothing, in one script; idempotency keys (per tenant) return the
        existing job's id with ``created=False``."""
        if params.connection is not None:
            raise UnsupportedError(_NO_TRANSACTIONS)
        if not params.jobs and params.batch is None:
            return []
        if uses_workflows(params):  # dependencies, a batch, uniqueness windows
            return await self._enqueue_workflow(params)
        reply = await self._require_lane().script(
            "enqueue", codec.enqueue_args(params.now, params.jobs)
        )
        return [
            EnqueueResult(id=int(reply[i]), created=reply[i + 1] == 1)
            for i in range(0, len(reply), 2)
        ]

    def enqueue_many_sync(self, params: EnqueueParams) -> list[EnqueueResult]:
        """Not available on Redis: the core enqueues through its portal thread instead."""
        if params.connection is not None:
            raise UnsupportedError(_NO_TRANSACTIONS)
        raise UnsupportedError("the Redis backend has no synchronous enqueue; use the async path")

    # -- the hot path ---------------------------------------------------------------------

    async def claim(self, params: ClaimParams) -> list[ClaimedJob]:
        """Claim up to ``params.limit`` due jobs in one script (see ``claim.lua``)."""
        self._note_channels(params.channels)
        script = "claim_limited" if params.limits or params.fair else "claim"
        rows = await self._require_lane().script(script, codec.claim_args(params))
        token = params.token
        return [codec.claimed_from_reply(row, token) for row in rows]

    async def complete_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply every outcome in one script call; True where the fence held."""
        if not outcomes:
            return []
        args = codec.complete_args(self._keep_removed_events, outcomes)
        lane, inflight = self._require_lane(), self._inflight
        write, applied = inflight.begin(outcomes), None
        try:
            reply = await lane.script("complete", args)
            applied = codec.applied(outcomes, reply)
        finally:
            inflight.end(write, applied)
        return applied

    async def complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimParams
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """``complete_many`` then ``claim`` in one script call (``complete_claim.lua``).

        The claim sees what the outcomes changed. When they made work available (a job
        requeued, a group freed) this process's ``wait_for_work`` returns at once as
        well, so no other worker of this process waits for the poll (the wake-up markers
        tell every other process). The script runs as one atomic step that cannot fail
        half-way, so an error applies nothing of either part."""
        if not outcomes:
            return [], await self.claim(claim)
        self._note_channels(claim.channels)
        args = codec.complete_args(self._keep_removed_events, outcomes)
        args += codec.claim_args(claim)
        lane, inflight = self._require_lane(), self._inflight
        write, done = inflight.begin(outcomes), None
        try:
            script = "complete_claim_limited" if claim.limits or claim.fair else "complete_claim"
            applied, rows, woke = await lane.script(script, args)
            done = codec.applied(outcomes, applied)
        finally:
            inflight.end(write, done)
        if woke == 1:
            self.wake()
        token = claim.token
        return done, [codec.claimed_from_reply(r, token) for r in rows]

    async def heartbeat(self, params: HeartbeatParams) -> HeartbeatResult:
        """Renew every listed lease in one script call. A job whose outcome this backend
        was writing meanwhile is not reported lost: Redis may run that write before the
        heartbeat, which then finds the job finished (see :mod:`.inflight`)."""
        if not params.jobs:
            return HeartbeatResult(lost=frozenset(), cancel_requested=frozenset())
        args: list[str] = [codec.ts(params.now), codec.ts(params.lease_expires_at)]
        for job_id, token in params.jobs:
            args += [str(job_id), token]
        inflight = self._inflight
        seen = inflight.watch()
        try:
            gone, cancel = await self._script("heartbeat", *args)
            lost = await inflight.lost((int(x) for x in gone), params.jobs, seen) if gone else None
        finally:
            inflight.unwatch(seen)
        return HeartbeatResult(
            lost=lost or frozenset(), cancel_requested=frozenset(int(x) for x in cancel)
        )

    async def cancel_requests(self, job_ids: Sequence[int]) -> frozenset[int]:
        """Of these running jobs, those whose cancel was requested."""
        if not job_ids:
            return frozenset()
        reply = await self._script("cancel_requests", *(str(i) for i in job_ids))
        return frozenset(int(x) for x in reply)

    async def set_progress(self, update: ProgressUpdate) -> bool:
        """Store progress (fenced by the lease token) and a ``progress`` event."""
        progress = str(int(update.progress))
        reply = await self._script(
            "set_progress",
            str(update.job_id),
            update.token,
            progress,
            codec.ts(update.now),
            f'{{"progress": {progress}}}',
        )
        return bool(int(reply))

    async def append_logs(self, entries: Sequence[LogEntry]) -> None:
        """Append log lines to their jobs, fenced by their lease token (lines of a job
        not running under it are dropped)."""
        if not entries:
            return
        args: list[str] = []
        for e in entries:
            args += [
                str(e.job_id),
                e.token,
                codec.ts(e.at),
                e.level,
                e.message,
                str(int(e.attempt)),
            ]
        await self._script("append_logs", *args)

    def _note_channels(self, channels: tuple[str, ...] | None) -> None:
        if self._wait_channels is None:
            return
        if channels is None:
            self._wait_channels = None
        else:
            self._wait_channels.update(channels)

    def _wait_keys(self) -> list[str]:
        channels = self._wait_channels
        if not channels:  # None (every channel) or no claim yet
            return [self._keys.marker]
        return [self._keys.marker_ch(c) for c in sorted(channels)]

    async def wait_for_work(
        self, timeout: float, claim: ClaimParams | None = None
    ) -> list[ClaimedJob]:
        """Block until a wake-up marker for this process's channels appears, ``wake()``
        is called, or ``timeout`` passes. A store failure makes it pause (at most
        ``poll_interval``) and return instead of raising; the next claim reports it.

        With ``claim``, the wait registers it as a standing claim: an enqueue of a due
        job that this claim would take at the enqueue's ``now`` (its filters, no pause,
        its group free, nothing queued ahead of it in its channel; up to ``claim.limit``
        jobs) stores it as claimed under ``claim.token``, with a lease as long as
        ``claim``'s counted from then, and hands it over in the blocking pop's reply; the
        wait then returns it (see :mod:`.handoff`). Only one wait per backend blocks at
        a time; concurrent ones share its end and return ``[]``."""
        waker = self._waker
        if waker is None:
            raise BackendError(_NOT_CONNECTED)
        if claim is not None:
            self._note_channels(claim.channels)
        return await waker.wait(self._wait_keys(), timeout, claim)

    def wake(self) -> None:
        """Wake this process's ``wait_for_work`` (sync, thread-safe)."""
        if self._waker is not None:
            self._waker.wake()

    # -- maintenance ----------------------------------------------------------------------

    async def expired_leases(self, now: float, limit: int) -> list[ExpiredLease]:
        """Running jobs whose lease expired at or before ``now``."""
        rows = await self._script("expired_leases", codec.ts(now), str(int(limit)))
        return [codec.expired_from_reply(row) for row in rows]

    async def promote_due(self, params: PromoteParams) -> PromoteResult:
        """scheduled → queued for ``run_at <= now + horizon`` (see ``promote_due.lua``)."""
        now = params.now
        count, earliest = await self._script(
            "promote_due", codec.ts(now), codec.ts(now + params.horizon), str(int(params.limit))
        )
        return PromoteResult(int(count), None if earliest is None else float(earliest))

    async def prune(self, params: PruneParams) -> PruneResult:
        """Delete up to ``limit`` finished jobs (with events, logs and idempotency keys)."""
        reply = await self._script(
            "prune", str(params.state), codec.ts(params.finished_before), str(int(params.limit))
        )
        return codec.removed_from_reply(reply)

    async def acquire_lock(self, params: LockParams) -> bool:
        """Take or renew a named lease, judged with the caller's ``now`` (Redis' own TTL
        only drops records abandoned for ``LOCK_GRACE_MS`` past their expiry)."""
        now, ttl = params.now, params.ttl
        gc_ms = str(int(ttl * 1000) + LOCK_GRACE_MS)
        args = (params.name, params.owner, codec.ts(now), codec.ts(now + ttl), gc_ms)
        return bool(int(await self._script("lock_acquire", *args)))

    # -- inspection and management --------------------------------------------------------

    async def get_job(self, job_id: int, tenant: str | None = None) -> Job | None:
        """The job, or None (also another tenant's, when ``tenant`` is given: its tenant
        field is read first, the whole hash only on a match)."""
        conns = self._require()
        key = self._keys.job(job_id)
        if tenant is not None:
            owner = await conns.guard("get_job", conns.client.hget(key, "tenant"))
            if owner != tenant:
                return None
        row = await conns.guard("get_job", conns.client.hgetall(key))
        return codec.job_from_hash(cast(dict[str, str], row)) if row else None

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        """Jobs matching the filter, newest first (bounded scan, see ``list_jobs.lua``)."""
        rows = await self._script(
            "list_jobs",
            "" if flt.state is None else str(flt.state),
            "" if flt.before_id is None else str(int(flt.before_id)),
            str(int(flt.limit)),
            *codec.filter_args(flt),
        )
        return [codec.job_from_hash(codec.flat_to_dict(row)) for row in rows]

    async def counts(self, channel: str | None) -> dict[str, int]:
        """Number of jobs per state (of one channel, or of all)."""
        keys, conns = self._keys, self._require()
        if channel is not None:  # any channel name, "*" included, is just a channel
            raw = await conns.guard("counts", conns.client.hgetall(keys.counts(channel)))
            return {s: max(int(raw.get(s, 0)), 0) for s in _STATES}

        def build(pipe: Pipeline) -> None:
            for s in _STATES:
                pipe.zcard(keys.state(s))

        sizes = await conns.pipeline("counts", build)
        return {s: int(n) for s, n in zip(_STATES, sizes, strict=True)}

    async def channel_stats(self) -> list[ChannelStats]:
        """Counts per state and the oldest queued job's run_at, for every channel."""
        rows = await self._script("channel_stats")
        stats = [
            ChannelStats(
                channel=str(channel),
                counts={str(k): int(v) for k, v in codec.flat_to_dict(flat).items()},
                oldest_queued_run_at=None if oldest is None else float(oldest),
            )
            for channel, flat, oldest in rows
        ]
        return sorted(stats, key=lambda s: s.channel)

    async def cancel(self, job_id: int, now: float) -> CancelOutcome:
        """Cancel an upcoming job, or request a running one's cancel."""
        return CancelOutcome(await self._script("cancel", str(job_id), codec.ts(now)))

    async def cancel_jobs(self, flt: JobFilter, now: float) -> int:
        """Cancel every upcoming job matching ``flt`` (in chunks of one script call)."""
        upcoming = [str(s) for s in JobState if s in UPCOMING_STATES]
        if flt.state is not None:
            if flt.state not in UPCOMING_STATES:
                return 0
            upcoming = [str(flt.state)]
        filter_args = codec.filter_args(flt)
        total = 0
        for state in upcoming:
            cursor: str | None = "+inf"
            while cursor is not None:
                n, cursor = await self._script(
                    "cancel_jobs", codec.ts(now), state, cursor, *filter_args
                )
                total += int(n)
        return total

    async def retry(self, job_id: int, now: float) -> RetryResult:
        """failed/cancelled → queued with fresh attempts (its errors are kept)."""
        reply = await self._script("retry", str(job_id), codec.ts(now), order_key(now))
        return codec.retry_from_reply(reply)

    async def set_paused(self, channel: str | None, paused: bool) -> None:
        """Pause or resume one channel, or every channel (``None``): the every-channel
        pause is a key of its own, so any channel name (``"*"`` included) is just a
        channel, and resuming one channel leaves the every-channel pause in place
        (see ``set_paused.lua``)."""
        await self._script("set_paused", codec.opt(channel), "1" if paused else "0")

    async def get_logs(self, job_id: int) -> list[LogRecord]:
        """The job's log lines, oldest first."""
        conns = self._require()
        items = await conns.guard("get_logs", conns.client.lrange(self._keys.logs(job_id), 0, -1))
        return codec.logs_from_list([str(i) for i in items])

    async def get_events(self, job_id: int) -> list[Event]:
        """The job's events, oldest first (a job removed on completion keeps them for
        ``keep_completed``; pruning deletes them with the job). Its ``enqueued`` event is
        its hash (see ``write_job`` in ``_lib_jobs.lua``) unless it was stored."""
        keys = self._keys

        def build(pipe: Pipeline) -> None:
            pipe.hmget(keys.job(job_id), codec.ENQUEUED_FIELDS)
            pipe.lrange(keys.events(job_id), 0, -1)

        fields, items = await self._require().pipeline("get_events", build)
        stored = codec.events_from_list(job_id, [str(i) for i in items])
        enqueued = codec.enqueued_event(job_id, fields)
        return stored if enqueued is None else [enqueued, *stored]

    async def read_events(self, params: EventRead) -> EventPage:
        """Events stored after cursor ``after`` (None: from now on), at most ``limit``,
        waiting up to ``timeout`` seconds for the first one (see :mod:`.stream` for the
        cursor)."""
        stream, conns = self._stream, self._require()
        if stream is None:
            raise BackendError(_NOT_CONNECTED)
        read = stream.read(params.after, params.limit, params.timeout)
        events, cursor = await conns.guard("read_events", read)
        return EventPage(events, cursor)

    # -- cron -----------------------------------------------------------------------------

    async def upsert_cron(self, record: CronRecord) -> None:
        """Create or replace a schedule (keeps last_run_at / last_job_id)."""
        await self._script("cron_upsert", *codec.cron_args(record))

    async def list_cron(self) -> list[CronRecord]:
        """Every schedule, by name."""
        rows = await self._script("cron_list")
        return sorted((codec.cron_from_flat(row) for row in rows), key=lambda r: r.name)

    async def delete_cron(self, names: Sequence[str]) -> int:
        """Remove schedules; returns how many existed."""
        if not names:
            return 0
        return int(await self._script("cron_delete", *names))

    async def set_cron_paused(self, params: CronPause) -> bool:
        """Pause or resume a schedule (``next_run_at`` None keeps the current one);
        False if it does not exist."""
        paused = "1" if params.paused else "0"
        reply = await self._script(
            "cron_pause", params.name, paused, codec.opt_ts(params.next_run_at)
        )
        return bool(int(reply))

    async def fire_cron(self, fire: CronFire) -> CronFireResult:
        """Compare-and-swap the schedule's next run and enqueue its job, in one script."""
        won, job_id = await self._script("cron_fire", *codec.cron_fire_args(fire))
        return CronFireResult(bool(int(won)), None if job_id is None else int(job_id))

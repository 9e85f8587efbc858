"""The PostgreSQL backend: psycopg 3 (async) with a connection pool.

- **Hot path in one statement each.** ``claim`` locks due rows with ``FOR UPDATE SKIP
  LOCKED`` in a materialised CTE, takes their groups, flips them to running and stores
  their ``started`` events; ``complete_many`` applies a whole batch of fenced outcomes
  (with events, error records, removals, requeues); ``heartbeat`` renews every lease of a
  worker; an enqueue inserts its jobs and one NOTIFY (one job: a typed single-row
  insert; a batch: one JSON document, see ``enqueue.py``). Every statement runs in
  autocommit: one round trip.
- **Time** comes from the core (``now`` epoch floats through ``to_timestamp``), never
  from the database clock, so a ManualClock drives every decision.
- **Groups** are serialised by ``running_groups`` (see ``queries.sql``, ``claim``).
- **Wake-ups**: LISTEN/NOTIFY on one dedicated connection (``listener.py``), opened
  by the first ``wait_for_work`` or ``read_events``: a process that only enqueues
  neither holds it nor hears its own NOTIFYs. ``read_events`` has no NOTIFY of its own
  (a NOTIFY per claim or completion would serialise the hot path on the notify queue
  lock): it wakes on this process's own writes and on job notifications, and otherwise
  polls every ``EVENTS_POLL`` seconds.
- **Events**: a job's ``enqueued`` event is its row, not a stored event (one row less
  per enqueue); ``get_events`` and ``read_events`` read it from there (``cursor.py``).
- **Faults**: every driver error is a BackendError; dead connections are replaced
  without waiting (``connections.py``) and the listener reconnects with back-off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool

from conveyor.backends.base import (
    CancelOutcome,
    ChannelStats,
    ClaimedJob,
    ClaimParams,
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
    RemovedJob,
    RetryOutcome,
    RetryResult,
    as_stored,
)
from conveyor.backends.postgres import codec
from conveyor.backends.postgres.connections import (
    LifoConnectionPool,
    backend_errors,
    caller_connection,
    configure_session,
    parse_url,
    pooled,
)
from conveyor.backends.postgres.cronverbs import CronVerbs
from conveyor.backends.postgres.cursor import EventsCursor
from conveyor.backends.postgres.durable import DurableVerbs
from conveyor.backends.postgres.enqueue import (
    drive,
    drive_sync,
    needs_transaction,
    plan_for,
)
from conveyor.backends.postgres.limits import LimitVerbs
from conveyor.backends.postgres.listener import Listener, Signal
from conveyor.backends.postgres.ops import OpsVerbs
from conveyor.backends.postgres.sqlfiles import (
    Queries,
    bootstrap_sql,
    migration_script,
    migrations,
    native,
    quote_schema,
)
from conveyor.backends.postgres.workflows import WorkflowVerbs
from conveyor.backends.rows import event_from_row, log_from_row
from conveyor.errors import BackendError, UnsupportedError
from conveyor.models import Event, Job, JobState, LogRecord
from conveyor.settings import Settings, validate_identifier

__all__ = ["PostgresBackend"]

log = logging.getLogger("conveyor")

EVENTS_POLL = 0.25  # seconds between read_events polls when no wake-up arrives


class PostgresBackend(DurableVerbs, OpsVerbs, LimitVerbs, WorkflowVerbs, CronVerbs):
    """Backend on one PostgreSQL schema (``settings.schema``); steps, tokens and resumes
    are in :class:`~.durable.DurableVerbs`, the operations surface in :class:`~.ops.OpsVerbs`,
    flow control (a claim with limits or fairness) in :class:`~.limits.LimitVerbs`,
    workflows (dependencies, batches) in :class:`~.workflows.WorkflowVerbs`.

    URL query parameters ``pool_min_size`` (default 1), ``pool_max_size`` (10) and
    ``pool_timeout`` (seconds, 5) size the pool; every other parameter goes to libpq.
    """

    name = "postgres"
    supports_transactions = True  # connection=: a psycopg (or SQLAlchemy) connection
    sync_enqueue = False  # sync code without connection= goes through the portal
    shared_across_loops = False  # the pool and the listener belong to one event loop
    hands_off = False  # LISTEN/NOTIFY wakes the caller, who then claims

    def __init__(self, settings: Settings):
        self.settings = settings
        self.schema = validate_identifier(settings.schema, "schema")
        self.conninfo, self.pool_options = parse_url(settings.url)
        self.notify_channel = f"conveyor_{self.schema}"
        self.queries = Queries(self.schema)
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._listener: Listener | None = None
        self._work = Signal()
        self._events = Signal()

    # -- connection -------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the pool (failing with BackendError when the server does not answer
        within ``pool_timeout``). The LISTEN connection waits for its first use
        (:meth:`_listen`).

        One connection is made first, outside the pool: a server that refuses us (down,
        no such database, bad password) fails it at once with psycopg's reason, where
        the pool would retry in the background until ``pool_timeout`` and then say only
        that it timed out."""
        if self._pool is not None:
            return
        loop = asyncio.get_running_loop()
        self._work.loop = self._events.loop = loop
        opts = self.pool_options
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = LifoConnectionPool(
            self.conninfo,
            min_size=opts.min_size,
            max_size=opts.max_size,
            timeout=opts.timeout,
            kwargs={"autocommit": True},
            configure=configure_session,
            name=f"conveyor-{self.schema}",
            open=False,
        )
        try:
            with backend_errors("connect"):
                probe = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                await probe.close()
                await pool.open(wait=True, timeout=opts.timeout)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    def _listen(self) -> None:
        """Start the LISTEN connection unless it runs (or the backend is closed). Its
        (re)connect wakes every waiter, so nothing sent before it listened is missed."""
        if self._listener is not None or self._pool is None:
            return
        app = conninfo_to_dict(self.conninfo).get("application_name") or "conveyor"
        self._listener = Listener(
            psycopg.conninfo.make_conninfo(self.conninfo, application_name=f"{app}:listen"),
            self.notify_channel,
            on_notify=self._notified,
            on_connect=self._notified,
        )
        self._listener.start()

    async def close(self) -> None:
        pool, self._pool = self._pool, None  # first: no LISTEN connection starts anew
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()
        if pool is not None:
            await pool.close(timeout=5.0)

    def _notified(self, payload: str = "") -> None:
        self._work.fire()
        self._events.fire()

    def _connection(self) -> Any:
        if self._pool is None:
            raise BackendError("the PostgreSQL backend is not connected (call connect())")
        return pooled(self._pool, self.pool_options.timeout)

    async def _fetch(self, action: str, query: str, args: dict[str, Any]) -> list[Any]:
        """One statement on a pooled connection; its rows as tuples. The statement goes
        out with native ``$n`` placeholders (:func:`~.sqlfiles.native`)."""
        sql, names = native(query)
        values = [args[name] for name in names]
        with backend_errors(action):
            async with self._connection() as conn:
                cur = psycopg.AsyncRawCursor(conn, row_factory=tuple_row)
                async with cur:
                    await cur.execute(sql, values)
                    result = cur.pgresult
                    return await cur.fetchall() if result is not None and result.nfields else []

    async def _fetch_dicts(
        self, action: str, query: str, args: dict[str, Any]
    ) -> list[dict[str, Any]]:
        with backend_errors(action):
            async with self._connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(query, args)
                rows: list[dict[str, Any]] = await cur.fetchall()
                return rows

    async def migrate(self) -> None:
        """Apply missing migrations in one transaction, under an advisory lock per
        schema (concurrent migrators wait, then find nothing left to do)."""
        quoted = quote_schema(self.schema)
        with backend_errors("migrate"):
            async with self._connection() as conn, conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s))",
                    ["conveyor.migrate." + self.schema],
                )
                await conn.execute(bootstrap_sql(self.schema).encode())
                cur = await conn.execute(f"SELECT version FROM {quoted}.schema_migrations")
                applied = {row[0] for row in await cur.fetchall()}
                for m in migrations():
                    if m.version in applied:
                        continue
                    await conn.execute(m.sql(self.schema).encode())
                    await conn.execute(
                        f"INSERT INTO {quoted}.schema_migrations (version, name) VALUES (%s, %s)",
                        [m.version, m.name],
                    )
                    log.info("applied migration %04d_%s to schema %s", m.version, m.name, quoted)

    def migration_sql(self) -> str:
        return migration_script(self.schema)

    # -- enqueue ----------------------------------------------------------------------
    async def enqueue_many(self, params: EnqueueParams) -> list[EnqueueResult]:
        plan = plan_for(self.queries, self.notify_channel, params)
        if params.connection is not None:
            conn = caller_connection(params.connection, sync=False)
            if isinstance(conn, psycopg.Connection):
                return await asyncio.to_thread(self._enqueue_on_sync, conn, params)
            with backend_errors("enqueue in the caller's transaction"):
                results: list[EnqueueResult] = await drive(conn, plan)
            return results
        with backend_errors("enqueue"):
            async with self._connection() as conn:
                if needs_transaction(params.jobs):
                    async with conn.transaction():
                        results = await drive(conn, plan)
                else:
                    results = await drive(conn, plan)
        self._notified()
        return results

    def enqueue_many_sync(self, params: EnqueueParams) -> list[EnqueueResult]:
        if params.connection is None:
            raise UnsupportedError("PostgreSQL enqueues from sync code through the portal")
        conn = caller_connection(params.connection, sync=True)
        return self._enqueue_on_sync(conn, params)

    def _enqueue_on_sync(
        self, conn: psycopg.Connection[Any], params: EnqueueParams
    ) -> list[EnqueueResult]:
        plan = plan_for(self.queries, self.notify_channel, params)
        with backend_errors("enqueue in the caller's transaction"):
            results: list[EnqueueResult] = drive_sync(conn, plan)
        return results

    # -- the hot path -------------------------------------------------------------------
    async def claim(self, params: ClaimParams) -> list[ClaimedJob]:
        if params.limit <= 0:
            return []
        if params.limits or params.fair:
            return await self._claim_limited(params)
        rows = await self._fetch(
            "claim", self.queries.claim(params.channels), codec.claim_args(params)
        )
        if rows:
            self._events.fire()
        return [codec.claimed_job(row, params.token) for row in rows]

    async def complete_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        wait = codec.has_wait(outcomes)  # a wait may requeue (its token is done)
        rows = await self._fetch(
            "complete",
            self.queries.complete(wait=wait),
            codec.complete_args(outcomes, self.notify_channel, wait),
        )
        applied = {row[0] for row in rows}
        as_stored(outcomes, {row[0]: row[1] for row in rows if row[1] is not None})
        if rows:
            self._events.fire()
            if wait or any(o.state in (JobState.QUEUED, JobState.SCHEDULED) for o in outcomes):
                self._work.fire()
        return [i in applied for i in range(len(outcomes))]

    async def complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimParams
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """One statement, one commit: the steps of ``complete_many`` then those of
        ``claim`` (queries.sql). The claim's snapshot predates the outcomes, so a job
        they requeue or a group they free is claimed on the next call (the fetcher is
        woken for it)."""
        if not outcomes or claim.limit <= 0:
            applied = await self.complete_many(outcomes)
            return applied, await self.claim(claim)
        if claim.limits or claim.fair:
            return await self._complete_and_claim_limited(outcomes, claim)
        args = codec.claim_args(claim)
        wait = codec.has_wait(outcomes)
        args.update(codec.complete_args(outcomes, self.notify_channel, wait))
        query = self.queries.claim(claim.channels, complete=True, wait=wait)
        rows = await self._fetch("complete and claim", query, args)
        first = rows[0]
        done = set(first[0] or ())
        as_stored(outcomes, first[18] or {})
        if first[1]:
            self._work.fire()
        if done or first[2] is not None:
            self._events.fire()
        jobs = [codec.claimed_job(row[2:], claim.token) for row in rows if row[2] is not None]
        return [i in done for i in range(len(outcomes))], jobs

    async def heartbeat(self, params: HeartbeatParams) -> HeartbeatResult:
        if not params.jobs:
            return HeartbeatResult(frozenset(), frozenset())
        rows = await self._fetch(
            "heartbeat",
            self.queries["heartbeat"],
            {
                "ids": [job_id for job_id, _ in params.jobs],
                "tokens": [token for _, token in params.jobs],
                "lease_expires_at": params.lease_expires_at,
            },
        )
        held = {row[0] for row in rows}
        return HeartbeatResult(
            lost=frozenset(job_id for job_id, _ in params.jobs if job_id not in held),
            cancel_requested=frozenset(row[0] for row in rows if row[1]),
        )

    async def cancel_requests(self, job_ids: Sequence[int]) -> frozenset[int]:
        if not job_ids:
            return frozenset()
        rows = await self._fetch(
            "cancel_requests", self.queries["cancel_requests"], {"ids": list(job_ids)}
        )
        return frozenset(row[0] for row in rows)

    async def set_progress(self, update: ProgressUpdate) -> bool:
        rows = await self._fetch(
            "set_progress",
            self.queries["set_progress"],
            {
                "id": update.job_id,
                "token": update.token,
                "progress": update.progress,
                "now": update.now,
            },
        )
        if rows[0][0]:
            self._events.fire()
        return bool(rows[0][0])

    async def append_logs(self, entries: Sequence[LogEntry]) -> None:
        if entries:
            await self._fetch(
                "append_logs", self.queries["append_logs"], {"logs": codec.logs_json(entries)}
            )

    async def wait_for_work(
        self, timeout: float, claim: ClaimParams | None = None
    ) -> list[ClaimedJob]:
        self._listen()
        await self._work.wait(timeout)
        return []  # no hand-off: the caller claims

    def wake(self) -> None:
        self._work.fire_threadsafe()

    # -- maintenance --------------------------------------------------------------------
    async def expired_leases(self, now: float, limit: int) -> list[ExpiredLease]:
        rows = await self._fetch(
            "expired_leases", self.queries["expired_leases"], {"now": now, "limit": limit}
        )
        return [codec.expired_lease(row) for row in rows]

    async def promote_due(self, params: PromoteParams) -> PromoteResult:
        rows = await self._fetch(
            "promote_due",
            self.queries["promote_due"],
            {
                "now": params.now,
                "until": params.now + params.horizon,
                "limit": params.limit,
                "notify_channel": self.notify_channel,
            },
        )
        count, earliest = rows[0]
        if count:
            self._work.fire()
        return PromoteResult(int(count), earliest)

    async def prune(self, params: PruneParams) -> PruneResult:
        rows = await self._fetch(
            "prune",
            self.queries["prune"],
            {
                "state": params.state.value,
                "before": params.finished_before,
                "limit": params.limit,
            },
        )
        return PruneResult([RemovedJob(r[0], r[1], r[2], r[3]) for r in rows])

    async def acquire_lock(self, params: LockParams) -> bool:
        now = params.now
        rows = await self._fetch(
            "acquire_lock",
            self.queries["acquire_lock"],
            {
                "name": params.name,
                "owner": params.owner,
                "now": now,
                "expires_at": now + params.ttl,
            },
        )
        return bool(rows)

    # -- inspection and management ------------------------------------------------------
    async def get_job(self, job_id: int, tenant: str | None = None) -> Job | None:
        args = {"id": job_id, "tenant": tenant}
        rows = await self._fetch_dicts("get_job", self.queries["get_job"], args)
        return codec.job(rows[0]) if rows else None

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        rows = await self._fetch_dicts(
            "list_jobs", self.queries["list_jobs"], codec.filter_args(flt)
        )
        return [codec.job(row) for row in rows]

    async def counts(self, channel: str | None) -> dict[str, int]:
        rows = await self._fetch("counts", self.queries["counts"], {"channel": channel})
        out = {state.value: 0 for state in JobState}
        out.update({state: int(n) for state, n in rows})
        return out

    async def channel_stats(self) -> list[ChannelStats]:
        rows = await self._fetch("channel_stats", self.queries["channel_stats"], {})
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float] = {}
        for channel, state, n, first_queued in rows:
            counts.setdefault(channel, {})[state] = int(n)
            if first_queued is not None:
                oldest[channel] = first_queued
        return [ChannelStats(ch, c, oldest.get(ch)) for ch, c in counts.items()]

    async def cancel(self, job_id: int, now: float) -> CancelOutcome:
        rows = await self._fetch("cancel", self.queries["cancel"], {"id": job_id, "now": now})
        before, after = rows[0]
        if before is None:
            return CancelOutcome.MISSING
        if after == JobState.CANCELLED.value:
            self._events.fire()
            return CancelOutcome.CANCELLED
        if after == JobState.RUNNING.value:
            return CancelOutcome.REQUESTED
        return CancelOutcome.FINISHED

    async def cancel_jobs(self, flt: JobFilter, now: float) -> int:
        args = codec.filter_args(flt)
        args["now"] = now
        rows = await self._fetch("cancel_jobs", self.queries["cancel_jobs"], args)
        count = int(rows[0][0])
        if count:
            self._events.fire()
        return count

    async def retry(self, job_id: int, now: float) -> RetryResult:
        rows = await self._fetch(
            "retry",
            self.queries["retry"],
            {"id": job_id, "now": now, "notify_channel": self.notify_channel},
        )
        before, requeued = rows[0]
        if before is None:
            return RetryResult(RetryOutcome.MISSING)
        if requeued:
            self._notified()
            return RetryResult(RetryOutcome.RETRIED)
        return RetryResult(RetryOutcome.NOT_RETRYABLE, JobState(before))

    async def set_paused(self, channel: str | None, paused: bool) -> None:
        """A row per paused channel, and ``""`` (never a valid channel name) for every
        channel: the claim skips a channel with a row, and everything while ``""`` has
        one. Resuming one channel deletes its row only (``""`` stays: still paused);
        resuming everything deletes every row."""
        if paused:
            all_or_one = channel if channel is not None else ""
            await self._fetch("pause", self.queries["pause"], {"channel": all_or_one})
        else:
            await self._fetch(
                "resume",
                self.queries["resume"],
                {"channel": channel, "notify_channel": self.notify_channel},
            )
            self._work.fire()

    async def get_logs(self, job_id: int) -> list[LogRecord]:
        rows = await self._fetch_dicts("get_logs", self.queries["get_logs"], {"id": job_id})
        return [log_from_row(row) for row in rows]

    async def get_events(self, job_id: int) -> list[Event]:
        rows = await self._fetch_dicts("get_events", self.queries["get_events"], {"id": job_id})
        return [event_from_row(row) for row in rows]

    async def read_events(self, params: EventRead) -> EventPage:
        """Events after the cursor, oldest first: the stored ones and each new job's
        ``enqueued`` event (its row), read with one snapshot; at most ``limit`` in all.
        How the cursor waits on id gaps is in ``cursor.py``."""
        self._listen()
        if params.after is None:
            rows = await self._fetch("read_events", self.queries["events_head"], {})
            head = EventsCursor.decode(f"{rows[0][0]}/{rows[0][1]}")
            return EventPage([], head.encode())
        limit = params.limit
        if limit <= 0:
            return EventPage([], params.after)
        cursor = EventsCursor.decode(params.after)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + params.timeout
        while True:
            rows = await self._fetch_dicts(
                "read_events",
                self.queries["read_events"],
                {"after": cursor.events.last, "after_job": cursor.jobs.last, "limit": limit},
            )
            events = cursor.take(rows, limit)
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                return EventPage(events, cursor.encode())
            await self._events.wait(min(EVENTS_POLL, remaining))

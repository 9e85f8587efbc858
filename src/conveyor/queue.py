"""Queue: the façade users hold (register, enqueue, inspect, manage).

It builds one :class:`conveyor.engine.Engine` and forwards to it and to the services
(worker, maintenance, cron, event bus); it holds no logic of its own beyond turning
public arguments into the engine's inputs. The enqueue methods spell their JobSpec out
(not from ``locals()``): that is the hot path of every enqueue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor import cron
from conveyor.backends.base import CancelOutcome, EventRead, RetryOutcome
from conveyor.builtins import register_builtins
from conveyor.clock import Clock, SystemClock, from_ts
from conveyor.definitions import JobDefinition
from conveyor.durations import Duration
from conveyor.engine import Engine
from conveyor.errors import InvalidStateError, QueueDormant, ValidationError, WorkerDisabled
from conveyor.events import EventCallback
from conveyor.limits import Limit, Rate
from conveyor.models import Event, Job, JobSpec, JobState, LogRecord, Token
from conveyor.operations import OperationsMethods
from conveyor.retry import Backoff
from conveyor.schedules import CronMethods
from conveyor.scheduling import compile_schedule
from conveyor.settings import Settings
from conveyor.validation import job_filter, validate_name
from conveyor.worker import Worker
from conveyor.worker.maintenance import Maintenance
from conveyor.workflows import WorkflowMethods

if TYPE_CHECKING:
    from conveyor.backends.base import Backend
    from conveyor.bus import Attachment, EventBus, Rule

__all__ = ["Queue"]

log = logging.getLogger("conveyor")
F = TypeVar("F", bound=Callable[..., Any])
_DEFAULT: Any = object()  # a retention argument not given (None means "forever")


def _retention(value: Any) -> Any:
    """``None`` (keep forever) as the settings' ``"forever"``; not given as None."""
    return None if value is _DEFAULT else ("forever" if value is None else value)


class Queue(CronMethods, OperationsMethods, WorkflowMethods):
    """A durable job queue on SQLite, PostgreSQL or Redis.

    Args:
        url: ``sqlite:///path.db``, ``postgresql://…`` or ``redis://…``. Defaults to
            ``CONVEYOR_URL``, else ``sqlite:///conveyor.db``.
        schema: PostgreSQL schema (``CONVEYOR_SCHEMA``). Defaults to ``conveyor``.
        prefix: Redis key prefix (``CONVEYOR_PREFIX``). Defaults to ``conveyor``.
        lease: seconds a claim lives without a heartbeat. Defaults to 30.
        heartbeat_interval: defaults to ``lease / 3``.
        sweep_interval: seconds between maintenance passes. Defaults to 1.
        poll_interval: fallback poll when no notification arrives. Defaults to 1.
        max_payload_bytes: defaults to 1 MiB.
        keep_completed, keep_failed: retention: seconds, a ``timedelta`` or a duration
            string (``"7d"``); ``None`` or ``"forever"`` keeps them until ``clean()``.
            Default 1 day and 7 days.
        strict_names: refuse to enqueue (or schedule) a name that no registered job
            has, when this queue has jobs of its own registered (the built-in
            ``conveyor.*`` ones do not count), so a typo never makes a job that can never
            run. Defaults to True (``CONVEYOR_STRICT_NAMES``).
        require_tenant: refuse an enqueue without a tenant (use ``tenant="system"`` for
            system jobs; cron-fired jobs are exempt). Defaults to False
            (``CONVEYOR_REQUIRE_TENANT``).
        clock: a :class:`conveyor.clock.Clock`; ``conveyor.testing.ManualClock()`` in tests.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        schema: str | None = None,
        prefix: str | None = None,
        lease: Duration | None = None,
        heartbeat_interval: Duration | None = None,
        sweep_interval: Duration | None = None,
        poll_interval: Duration | None = None,
        max_payload_bytes: int | None = None,
        keep_completed: Duration | None = _DEFAULT,
        keep_failed: Duration | None = _DEFAULT,
        strict_names: bool | None = None,
        require_tenant: bool | None = None,
        clock: Clock | None = None,
        _dormant: bool = False,
    ):
        settings = Settings.resolve(
            url=url,
            schema=schema,
            prefix=prefix,
            lease=lease,
            heartbeat_interval=heartbeat_interval,
            sweep_interval=sweep_interval,
            poll_interval=poll_interval,
            max_payload_bytes=max_payload_bytes,
            keep_completed=_retention(keep_completed),
            keep_failed=_retention(keep_failed),
            strict_names=strict_names,
            require_tenant=require_tenant,
        )
        self.engine = Engine(settings, clock or SystemClock(), dormant=_dormant)
        # schedules declared with @queue.job(cron=…) are stored whenever the store is
        # migrated, explicitly or on first use
        self.engine.after_migrate(lambda: cron.sync_definition_schedules(self.engine))
        self._workers: weakref.WeakSet[Worker] = weakref.WeakSet()
        register_builtins(self.engine, self)

    @classmethod
    def from_env(cls, dormant_ok: bool = True, **kwargs: Any) -> Queue:
        """A queue configured from ``CONVEYOR_*``. Without ``CONVEYOR_URL`` and with
        ``dormant_ok`` the queue is dormant: enqueue and worker() raise QueueDormant."""
        if not os.environ.get("CONVEYOR_URL") and not kwargs.get("url") and dormant_ok:
            log.warning("CONVEYOR_URL is not set: the job queue is dormant (jobs are not enqueued)")
            return cls(_dormant=True, **kwargs)
        return cls(**kwargs)

    def __repr__(self) -> str:
        return f"<conveyor.Queue {self.settings.url.split('?')[0]!r}>"

    @property
    def settings(self) -> Settings:
        """The resolved settings (arguments, then ``CONVEYOR_*``, then defaults)."""
        return self.engine.settings

    @property
    def clock(self) -> Clock:
        """Where every transition takes ``now`` from."""
        return self.engine.clock

    @property
    def dormant(self) -> bool:
        """True for a queue without a store (``from_env`` without ``CONVEYOR_URL``)."""
        return self.engine.dormant

    @property
    def definitions(self) -> dict[str, JobDefinition]:
        """The registered jobs by name (the built-in ``conveyor.*`` ones included)."""
        return self.engine.definitions

    # -- lifecycle ---------------------------------------------------------------------------
    async def migrate(self) -> None:
        """Create or upgrade the store's schema. Idempotent; also ``conveyor migrate``."""
        await self.engine.migrate()

    def migration_sql(self) -> str:
        """The schema as SQL for a DBA (``conveyor migrate --sql``; PostgreSQL)."""
        return self.engine.migration_sql()

    async def close(self) -> None:
        """Close this loop's connections (and the sync portal's)."""
        for worker in list(self._workers):
            await worker.stop()
        await self.engine.close()

    async def __aenter__(self) -> Queue:
        await self.engine.ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- registration ----------------------------------------------------------------------
    def job(
        self,
        name: str,
        *,
        channel: str = "default",
        attempts: int = 1,
        max_stalls: int = 1,
        backoff: Any = None,
        timeout: float | None = None,
        priority: int = 0,
        kill_on_timeout: bool = False,
        remove_on_complete: bool = False,
        remove_on_fail: bool = False,
        cron: str | None = None,
        every: timedelta | None = None,
        timezone: str = "UTC",
        allow_overlap: bool = False,
        catch_up: timedelta | None = None,
        concurrency: Limit | None = None,
        rate: Rate | None = None,
    ) -> Callable[[Callable[..., Any]], JobDefinition]:
        """Register a handler: ``@queue.job("send-welcome", attempts=5)``.

        Handlers take ``(payload, ctx)`` and may be ``async def`` or plain ``def`` (run in
        a thread pool). Their return value (JSON) is stored as the job's result.

        ``attempts`` bounds the runs that end in a handler failure; ``max_stalls``
        (0..1000) is how many times a run whose worker died (``kill -9``, a lost store)
        is put back without using up an attempt; one more and the job fails with error
        type ``Stalled``.

        ``remove_on_complete`` / ``remove_on_fail`` delete a job as soon as it completes /
        finally fails (no retry left), instead of keeping it for ``keep_completed`` /
        ``keep_failed``; its events stay readable for a while. Each is this job's
        default; an enqueue may override it.

        ``concurrency=conveyor.Limit(n, key=None|"group"|"tenant")`` runs at most ``n`` of
        this job at once (per group or tenant value), across every worker;
        ``rate=conveyor.Rate(n, per, key=…)`` starts at most ``n`` in any window of
        ``per``. Jobs held back stay queued and use no attempt (DESIGN.md "Flow control").
        """

        def register(fn: Callable[..., Any]) -> JobDefinition:
            definition = JobDefinition(
                queue=self,
                name=name,
                fn=fn,
                channel=channel,
                attempts=attempts,
                max_stalls=max_stalls,
                backoff=backoff,
                timeout=timeout,
                priority=priority,
                kill_on_timeout=kill_on_timeout,
                remove_on_complete=remove_on_complete,
                remove_on_fail=remove_on_fail,
                cron=cron,
                every=every,
                timezone=timezone,
                allow_overlap=allow_overlap,
                catch_up=catch_up,
                concurrency=concurrency,
                rate=rate,
            )
            if cron is not None or every is not None:
                compile_schedule(cron, every=every, timezone=timezone)  # refuse bad ones now
            self.engine.register(definition)
            return definition

        return register

    # -- enqueue ---------------------------------------------------------------------------
    async def enqueue(
        self,
        name: str,
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
        """Enqueue one job and return its id (an existing id for a repeated idempotency key).

        The options are :class:`conveyor.JobSpec`'s (None: the job definition's default);
        ``connection=`` makes it part of your open transaction (SQLite, PostgreSQL).
        """
        spec = JobSpec(name, payload, run_at=run_at, delay=delay, priority=priority,
                       channel=channel, attempts=attempts, max_stalls=max_stalls, backoff=backoff,
                       timeout=timeout, kill_on_timeout=kill_on_timeout,
                       remove_on_complete=remove_on_complete, remove_on_fail=remove_on_fail,
                       idempotency_key=idempotency_key, tags=tags, group=group,
                       tenant=tenant, depends_on=depends_on,
                       on_dependency_failure=on_dependency_failure, unique_for=unique_for,
                       unique_states=unique_states)  # fmt: skip
        return (await self.engine.enqueue([spec], connection))[0]

    async def enqueue_many(self, specs: Iterable[JobSpec], *, connection: Any = None) -> list[int]:
        """Enqueue several jobs at once, all or nothing; returns their ids in order."""
        return await self.engine.enqueue(specs, connection)

    def enqueue_sync(
        self,
        name: str,
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
        """Enqueue from sync code (Django, Flask, scripts); same options as :meth:`enqueue`.

        ``connection=`` takes a ``sqlite3.Connection`` or a psycopg (sync) ``Connection``.
        Safe to call from any thread, with or without a running event loop.
        """
        spec = JobSpec(name, payload, run_at=run_at, delay=delay, priority=priority,
                       channel=channel, attempts=attempts, max_stalls=max_stalls, backoff=backoff,
                       timeout=timeout, kill_on_timeout=kill_on_timeout,
                       remove_on_complete=remove_on_complete, remove_on_fail=remove_on_fail,
                       idempotency_key=idempotency_key, tags=tags, group=group,
                       tenant=tenant, depends_on=depends_on,
                       on_dependency_failure=on_dependency_failure, unique_for=unique_for,
                       unique_states=unique_states)  # fmt: skip
        return self.engine.enqueue_sync([spec], connection)[0]

    def enqueue_many_sync(self, specs: Iterable[JobSpec], *, connection: Any = None) -> list[int]:
        """Sync twin of :meth:`enqueue_many`."""
        return self.engine.enqueue_sync(specs, connection)

    # -- inspection --------------------------------------------------------------------------
    async def _ready(self) -> Backend:
        return await self.engine.ready()

    async def get_job(self, job_id: int, *, tenant: str | None = None) -> Job | None:
        """The job, or None when it does not exist (or was cleaned). With ``tenant``, also
        None when the job is another tenant's (or has no tenant), decided in the store
        without loading that job's payload. Its durable steps and tokens come with it."""
        backend = await self._ready()
        job = await backend.get_job(int(job_id), tenant)
        if job is None:
            return None
        steps, tokens, deps = await asyncio.gather(
            backend.load_steps(job.id),
            backend.list_tokens(job.id),
            backend.dependency_results(job.id),
        )
        if not steps and not tokens and not deps:
            return job
        return dataclasses.replace(
            job,
            depends_on=tuple(sorted(deps)),
            steps=tuple(
                {"name": s.name, "result": json.loads(s.result), "at": from_ts(s.at)} for s in steps
            ),
            tokens=tuple(dataclasses.asdict(self.engine.token(t)) for t in tokens),
        )

    async def list_jobs(
        self,
        state: JobState | str | None = None,
        name: str | None = None,
        channel: str | None = None,
        tags: Sequence[str] | None = None,
        tag_mode: str = "any",
        tenant: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
        name_prefix: str | None = None,
    ) -> list[Job]:
        """Jobs matching every given filter, newest first; page with ``before_id`` (the
        last id of the previous page). ``name_prefix`` keeps names starting with it."""
        flt = job_filter(
            state, name, channel, tags, tag_mode, tenant, limit, before_id, name_prefix
        )
        return await (await self._ready()).list_jobs(flt)

    async def counts(self, channel: str | None = None) -> dict[str, int]:
        """Number of jobs per state (every state present, zero included)."""
        return await (await self._ready()).counts(channel)

    async def get_job_logs(self, job_id: int) -> list[LogRecord]:
        """Lines the handler wrote with ``ctx.log``, oldest first."""
        return await (await self._ready()).get_logs(int(job_id))

    async def get_job_events(self, job_id: int) -> list[Event]:
        """The job's stored lifecycle events, oldest first."""
        return await (await self._ready()).get_events(int(job_id))

    # -- durable waits -----------------------------------------------------------------------
    async def complete_token(self, token_id: str, data: Any = None) -> bool:
        """Complete a token made by ``ctx.create_token`` with ``data`` (JSON) and resume the
        job waiting on it (``ctx.wait_for_token`` returns ``TokenResult(True, data)``).
        True once; False for an unknown, expired or already completed token (a replay
        never raises)."""
        return await self.engine.complete_token(token_id, data)

    async def get_token(self, token_id: str) -> Token | None:
        """The token (its state ``pending``/``completed``/``expired``, job and tags), or None."""
        return await self.engine.get_token(token_id)

    # -- management --------------------------------------------------------------------------
    async def cancel(self, job_id: int) -> bool:
        """Cancel an upcoming or running job. False if it had already finished (or is unknown).

        A running job gets ``ctx.cancelled`` set (async handlers are cancelled) and ends
        ``cancelled``.
        """
        backend = await self._ready()
        outcome = await backend.cancel(int(job_id), self.clock.now())
        if outcome is CancelOutcome.REQUESTED:
            self.engine.cancel_local(int(job_id))
        elif outcome is CancelOutcome.CANCELLED and self.engine.wants("cancelled"):
            job = await backend.get_job(int(job_id))
            if job is not None:
                self.engine.emit("cancelled", job.id, job.name, job.tenant, job.attempts)
        return outcome in (CancelOutcome.CANCELLED, CancelOutcome.REQUESTED)

    async def cancel_jobs(
        self,
        tags: Sequence[str] | None = None,
        tag_mode: str = "any",
        *,
        name: str | None = None,
        channel: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """Cancel upcoming (scheduled, queued, waiting) jobs matching the filters; the count."""
        flt = job_filter(None, name, channel, tags, tag_mode, tenant, 10_000)
        return await (await self._ready()).cancel_jobs(flt, self.clock.now())

    async def retry(self, job_id: int) -> None:
        """A failed or cancelled job back to queued, with fresh attempts (errors are kept).

        Raises:
            InvalidStateError: the job is in another state, or does not exist.
        """
        result = await (await self._ready()).retry(int(job_id), self.clock.now())
        if result.outcome is RetryOutcome.RETRIED:
            return
        if result.outcome is RetryOutcome.MISSING:
            raise InvalidStateError(f"job {job_id} does not exist")
        raise InvalidStateError(
            f"job {job_id} is {result.state}; only failed or cancelled jobs can be retried"
        )

    async def pause(self, channel: str | None = None) -> None:
        """Stop every worker from starting jobs of ``channel`` (all channels when None).
        This process's ``queue.on`` callbacks get a queue-level ``channel_paused`` event
        (``job_id`` 0, ``data={"channel": channel}``)."""
        if channel is not None:
            validate_name(channel, "channel")
        await (await self._ready()).set_paused(channel, True)
        self.engine.emit("channel_paused", 0, "", None, 0, {"channel": channel})

    async def resume(self, channel: str | None = None) -> None:
        """Undo :meth:`pause` (``None`` resumes everything); emits ``channel_resumed``."""
        if channel is not None:
            validate_name(channel, "channel")
        await (await self._ready()).set_paused(channel, False)
        self.engine.emit("channel_resumed", 0, "", None, 0, {"channel": channel})

    async def clean(
        self, older_than: timedelta | float = timedelta(days=1), state: str = "completed"
    ) -> int:
        """Delete finished jobs (``completed``, ``failed`` or ``cancelled``) that finished
        more than ``older_than`` ago; returns how many were removed. Each emits an
        in-process ``removed`` event (``data`` ``{"reason": "clean"}``)."""
        st: JobState | None
        try:
            st = JobState(state)
        except ValueError:
            st = None
        if st is None or st not in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED):
            raise ValidationError(
                f"clean() takes state completed, failed or cancelled, got {state!r}"
            )
        age = older_than.total_seconds() if isinstance(older_than, timedelta) else float(older_than)
        if age < 0:
            raise ValidationError("older_than must be >= 0")
        return await self.engine.prune(st, self.clock.now() - age)

    # -- events ------------------------------------------------------------------------------
    def on(self, event_type: str, callback: EventCallback) -> None:
        """Call ``callback(event)`` (sync or async) for events of this process's jobs."""
        self.engine.dispatcher.on(event_type, callback)

    def off(self, event_type: str, callback: EventCallback) -> None:
        """Remove a callback registered with :meth:`on`."""
        self.engine.dispatcher.off(event_type, callback)

    def attach(self, bus: EventBus, rules: Sequence[Rule] = ()) -> Attachment:
        """Listen to ``bus``: ``"job:enqueue"`` events and matching ``rules`` enqueue jobs,
        and this process's ``completed`` / ``failed`` / ``stalled`` events are republished
        as ``job.completed`` / ``job.failed`` / ``job.stalled``. A dormant queue enqueues
        nothing and logs one warning.

        Args:
            bus: a :class:`conveyor.EventBus`.
            rules: :class:`conveyor.Rule` objects turning record events into jobs.

        Returns:
            A :class:`conveyor.bus.Attachment`; ``detach()`` undoes it.
        """
        from conveyor.bus import attach

        return attach(self.engine, bus, rules)

    async def events(
        self, *, since: str | None = None, poll_timeout: float = 1.0
    ) -> AsyncIterator[Event]:
        """Lifecycle events from every process, as they are stored: from now on, or with
        ``since`` (an earlier :attr:`Event.id`) right after that event, so a consumer
        that restarts misses nothing."""
        backend = await self._ready()
        if since is None:
            cursor = (await backend.read_events(EventRead(None, 0, 0))).cursor
        elif isinstance(since, str) and since:
            cursor = since
        else:
            raise ValidationError(f"since must be an event id (a non-empty str), got {since!r}")
        while True:
            page = await backend.read_events(EventRead(cursor, 500, poll_timeout))
            cursor = page.cursor
            for event in page.events:
                yield event

    # -- workers -----------------------------------------------------------------------------
    def worker(
        self,
        channels: Sequence[str] | None = None,
        concurrency: int = 10,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        drain_timeout: float = 30.0,
        handle_signals: bool = False,
    ) -> Worker:
        """A worker for this queue's registered jobs; ``await worker.run()`` to start it.

        ``ordered=False`` claims any due jobs its filters allow, in no particular order
        (compas' unsafeIgnoreSorting), for throughput: priority and run_at order is then
        not promised. A backend keeps its order where that costs nothing, which all
        three do today (see ``ClaimParams``).
        """
        if self.dormant:
            raise QueueDormant("the queue is dormant: set CONVEYOR_URL to run a worker")
        if os.environ.get("CONVEYOR_WORKER", "").strip().lower() in ("0", "false", "no", "off"):
            raise WorkerDisabled(
                "CONVEYOR_WORKER=false: this process only enqueues and serves status"
            )
        worker = Worker(
            self.engine,
            channels=channels,
            concurrency=concurrency,
            include=include,
            exclude=exclude,
            ordered=ordered,
            timeout=timeout,
            drain_timeout=drain_timeout,
            handle_signals=handle_signals,
        )
        self._workers.add(worker)
        return worker

    async def run_maintenance(self) -> None:
        """One maintenance pass now: rescue expired leases, promote due jobs, fire cron
        ticks, prune by retention. Workers do this every ``sweep_interval`` by themselves."""
        await Maintenance(self.engine, owner="manual").run_once(force=True)

"""Queue: the façade users hold (register, enqueue, inspect, manage)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from conveyor import backends
from conveyor._json import ENCODER
from conveyor.backends.base import (
    Backend,
    CancelOutcome,
    EnqueueParams,
    JobFilter,
    NewJob,
    RetryOutcome,
)
from conveyor.clock import Clock, SystemClock, from_ts
from conveyor.definitions import (
    JobDefinition,
    check_attempts,
    check_backoff,
    check_priority,
    check_timeout,
)
from conveyor.errors import (
    InvalidStateError,
    PayloadError,
    QueueDormant,
    UnsupportedError,
    ValidationError,
    WorkerDisabled,
)
from conveyor.events import Dispatcher, EventCallback
from conveyor.models import CronSchedule, CronSpec, Event, Job, JobSpec, JobState, LogRecord
from conveyor.settings import Settings, validate_name

if TYPE_CHECKING:
    from conveyor.bus import Attachment, EventBus, Rule
    from conveyor.worker import Worker

__all__ = ["Queue"]

log = logging.getLogger("conveyor")
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

TAG_MODES = ("any", "all", "exact", "none")
MAX_DELAY = 100 * 365.25 * 86400.0  # seconds: anything later is a bug, not a schedule
_UNSET: Any = object()


def _json(payload: Any, limit: int) -> str:
    try:
        text = ENCODER.encode(payload)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PayloadError(f"payload is not JSON-serialisable: {exc}") from None
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > limit:
        raise PayloadError(f"payload is {size} bytes of JSON, over max_payload_bytes={limit}")
    return text


def _tags(tags: Any) -> tuple[str, ...]:
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise ValidationError(f"tags must be a list of strings, got {tags!r}")
    if not tags:
        return ()
    out = tuple(validate_name(t, "tag") for t in tags)
    return tuple(dict.fromkeys(out))


class Queue:
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
        keep_completed, keep_failed: retention. Default 1 day and 7 days.
        clock: a :class:`conveyor.clock.Clock`; ``conveyor.testing.ManualClock()`` in tests.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        schema: str | None = None,
        prefix: str | None = None,
        lease: float | None = None,
        heartbeat_interval: float | None = None,
        sweep_interval: float | None = None,
        poll_interval: float | None = None,
        max_payload_bytes: int | None = None,
        keep_completed: timedelta | float | None = None,
        keep_failed: timedelta | float | None = None,
        clock: Clock | None = None,
        _dormant: bool = False,
    ):
        self.settings = Settings.resolve(
            url=url,
            schema=schema,
            prefix=prefix,
            lease=lease,
            heartbeat_interval=heartbeat_interval,
            sweep_interval=sweep_interval,
            poll_interval=poll_interval,
            max_payload_bytes=max_payload_bytes,
            keep_completed=keep_completed,
            keep_failed=keep_failed,
        )
        self.clock: Clock = clock or SystemClock()
        self.dormant = _dormant
        self.definitions: dict[str, JobDefinition] = {}
        self._dispatcher = Dispatcher()
        self._backends: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Backend] = (
            weakref.WeakKeyDictionary()
        )
        self._connecting: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Future[Backend]
        ] = weakref.WeakKeyDictionary()
        self._shared: Backend | None = None  # for backends usable from any loop/thread
        self._sync_backend: Backend | None = None
        self._portal: _Portal | None = None
        self._workers: weakref.WeakSet[Worker] = weakref.WeakSet()
        self._migrated = False
        self._lock = threading.RLock()
        self._known_names: set[str] = set()  # names and channels already validated
        from conveyor.builtins import register_builtins

        register_builtins(self)

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

    # -- backend plumbing ------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        """``"sqlite"``, ``"postgres"`` or ``"redis"``, from the URL."""
        url = self.settings.url
        return (
            "sqlite"
            if url.startswith("sqlite")
            else "redis"
            if url.startswith("redis")
            else "postgres"
        )

    async def _backend(self) -> Backend:
        """The backend for the running event loop (connected on first use)."""
        if self.dormant:
            raise QueueDormant("the queue is dormant: set CONVEYOR_URL to enable it")
        if self._shared is not None:
            return self._shared
        loop = asyncio.get_running_loop()
        backend = self._backends.get(loop)
        if backend is not None:
            return backend
        pending = self._connecting.get(loop)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Backend] = loop.create_future()
        self._connecting[loop] = fut
        try:
            backend = backends.from_settings(self.settings)
            await backend.connect()
            if backend.name == "sqlite":
                self._shared = backend  # loop-agnostic: one connection for every loop/thread
            self._backends[loop] = backend
            fut.set_result(backend)
            return backend
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._connecting.pop(loop, None)

    async def migrate(self) -> None:
        """Create or upgrade the store's schema. Idempotent; also ``conveyor migrate``."""
        backend = await self._backend()
        await backend.migrate()
        self._migrated = True
        await self._sync_definition_schedules()

    async def _ready(self) -> Backend:
        backend = await self._backend()
        if not self._migrated:
            await backend.migrate()
            self._migrated = True
        return backend

    async def close(self) -> None:
        """Close this loop's connections (and the sync portal's)."""
        for worker in list(self._workers):
            await worker.stop()
        if self._portal is not None:
            self._portal.close(self)
            self._portal = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover
            loop = None
        backend = self._backends.pop(loop, None) if loop is not None else None
        if self._shared is not None:
            await self._shared.close()
            self._shared = None
        elif backend is not None:
            await backend.close()
        self._migrated = False

    async def __aenter__(self) -> Queue:
        await self._ready()
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
        backoff: Any = None,
        timeout: float | None = None,
        priority: int = 0,
        kill_on_timeout: bool = False,
        remove_on_complete: bool = False,
        cron: str | None = None,
        every: timedelta | None = None,
        timezone: str = "UTC",
        allow_overlap: bool = False,
        catch_up: timedelta | None = None,
    ) -> Callable[[Callable[..., Any]], JobDefinition]:
        """Register a handler: ``@queue.job("send-welcome", attempts=5)``.

        Handlers take ``(payload, ctx)`` and may be ``async def`` or plain ``def`` (run in
        a thread pool). Their return value (JSON) is stored as the job's result.
        """

        def register(fn: Callable[..., Any]) -> JobDefinition:
            if name in self.definitions:
                raise ValidationError(f"job {name!r} is already registered on this queue")
            definition = JobDefinition(
                queue=self,
                name=name,
                fn=fn,
                channel=channel,
                attempts=attempts,
                backoff=backoff,
                timeout=timeout,
                priority=priority,
                kill_on_timeout=kill_on_timeout,
                remove_on_complete=remove_on_complete,
                cron=cron,
                every=every,
                timezone=timezone,
                allow_overlap=allow_overlap,
                catch_up=catch_up,
            )
            if cron is not None or every is not None:
                from conveyor.scheduling import compile_schedule

                compile_schedule(cron, every=every, timezone=timezone)  # refuse bad ones now
            self.definitions[name] = definition
            return definition

        return register

    # -- enqueue ---------------------------------------------------------------------------
    def _prepare(
        self, spec: JobSpec, now: float, extra_options: dict[str, Any] | None = None
    ) -> NewJob:
        name = spec.name
        if not (type(name) is str and name in self._known_names):
            validate_name(name, "job name")
            if len(self._known_names) < 10_000:
                self._known_names.add(name)
        d = self.definitions.get(name)
        payload = _json(spec.payload, self.settings.max_payload_bytes)
        if (
            spec.run_at is None
            and spec.delay is None
            and spec.priority is None
            and spec.channel is None
            and spec.attempts is None
            and spec.backoff is None
            and spec.timeout is None
            and spec.kill_on_timeout is None
            and spec.remove_on_complete is None
            and spec.idempotency_key is None
            and spec.group is None
            and spec.tenant is None
            and not extra_options
            and spec.tags == ()
        ):
            # the common case, name and payload only: the definition's defaults
            if d is None:
                return NewJob(name, payload, JobState.QUEUED, now, 0, "default", 1, None,
                              False, None, (), None, None)  # fmt: skip
            return NewJob(name, payload, JobState.QUEUED, now, d.priority, d.channel,
                          d.attempts, None, bool(d.remove_on_complete), None, (), None,
                          None)  # fmt: skip
        if spec.run_at is not None and spec.delay is not None:
            raise ValidationError("give run_at= or delay=, not both")
        run_at = now
        if spec.run_at is not None:
            if not isinstance(spec.run_at, datetime):
                raise ValidationError(
                    f"run_at must be a datetime, got {type(spec.run_at).__name__}"
                )
            if spec.run_at.tzinfo is None or spec.run_at.utcoffset() is None:
                raise ValidationError("run_at must be timezone-aware (naive datetimes are refused)")
            try:
                run_at = max(now, spec.run_at.timestamp())
            except (OverflowError, ValueError, OSError):
                raise ValidationError(f"run_at {spec.run_at!r} is out of range") from None
            if run_at > now + MAX_DELAY:
                raise ValidationError(
                    f"run_at {spec.run_at.isoformat()} is more than 100 years away"
                )
        elif spec.delay is not None:
            delay = spec.delay.total_seconds() if isinstance(spec.delay, timedelta) else spec.delay
            if (
                isinstance(delay, bool)
                or not isinstance(delay, int | float)
                or not 0 <= delay <= MAX_DELAY
            ):
                raise ValidationError(
                    f"delay must be seconds from 0 to {MAX_DELAY:.0f} (100 years), got {spec.delay!r}"
                )
            run_at = now + float(delay)
        priority = (
            check_priority(spec.priority) if spec.priority is not None else (d.priority if d else 0)
        )
        channel = (
            validate_name(spec.channel, "channel")
            if spec.channel is not None
            else (d.channel if d else "default")
        )
        attempts = (
            check_attempts(spec.attempts) if spec.attempts is not None else (d.attempts if d else 1)
        )
        options: dict[str, Any] = dict(extra_options) if extra_options else {}
        if spec.backoff is not None:
            options["backoff"] = check_backoff(spec.backoff).to_dict()
        if spec.timeout is not None:
            options["timeout"] = check_timeout(spec.timeout)
        if spec.kill_on_timeout is not None:
            if not isinstance(spec.kill_on_timeout, bool):
                raise ValidationError(
                    f"kill_on_timeout must be True or False, got {spec.kill_on_timeout!r}"
                )
            options["kill_on_timeout"] = spec.kill_on_timeout
        if spec.remove_on_complete is not None and not isinstance(spec.remove_on_complete, bool):
            raise ValidationError(
                f"remove_on_complete must be True or False, got {spec.remove_on_complete!r}"
            )
        remove = (
            spec.remove_on_complete
            if spec.remove_on_complete is not None
            else (d.remove_on_complete if d else False)
        )
        key = (
            validate_name(spec.idempotency_key, "idempotency_key", max_len=512)
            if (spec.idempotency_key is not None)
            else None
        )
        return NewJob(
            name=name,
            payload=payload,
            state=JobState.SCHEDULED if run_at > now else JobState.QUEUED,
            run_at=run_at,
            priority=priority,
            channel=channel,
            max_attempts=attempts,
            options=json.dumps(options) if options else None,
            remove_on_complete=bool(remove),
            idempotency_key=key,
            tags=_tags(spec.tags),
            group=validate_name(spec.group, "group") if spec.group is not None else None,
            tenant=validate_name(spec.tenant, "tenant") if spec.tenant is not None else None,
        )

    def _params(self, specs: Iterable[JobSpec], connection: Any) -> EnqueueParams:
        if self.dormant:
            raise QueueDormant("the queue is dormant: set CONVEYOR_URL to enable it")
        now = self.clock.now()
        jobs = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, JobSpec):
                raise ValidationError(
                    f"enqueue_many takes JobSpec items; item {i} is {type(spec).__name__}"
                )
            jobs.append(self._prepare(spec, now))
        if connection is not None and self.backend_name == "redis":
            raise UnsupportedError(
                "Redis cannot enqueue inside your database transaction (connection=): "
                "use SQLite or PostgreSQL for transactional enqueue"
            )
        return EnqueueParams(jobs=jobs, now=now, connection=connection)

    def _announce(self, params: EnqueueParams, ids: Sequence[Any]) -> list[int]:
        wants = self._dispatcher.wants("enqueued")
        out = []
        for job, res in zip(params.jobs, ids, strict=True):
            out.append(res.id)
            if wants and res.created:
                self._dispatcher.emit(
                    Event("enqueued", res.id, job.name, job.tenant, 0, from_ts(params.now))  # type: ignore[arg-type]
                )
        return out

    async def enqueue(
        self,
        name: str,
        payload: Any = None,
        *,
        connection: Any = None,
        **options: Any,
    ) -> int:
        """Enqueue one job and return its id (an existing id for a repeated idempotency key).

        Options: run_at, delay, priority, channel, attempts, backoff, timeout,
        kill_on_timeout, remove_on_complete, idempotency_key, tags, group, tenant;
        ``connection=`` makes it part of your open transaction (SQLite, PostgreSQL).
        """
        try:
            spec = JobSpec(name, payload, **options)
        except TypeError as exc:
            raise ValidationError(f"bad enqueue option: {exc}") from None
        return (await self.enqueue_many([spec], connection=connection))[0]

    async def enqueue_many(self, specs: Iterable[JobSpec], *, connection: Any = None) -> list[int]:
        """Enqueue several jobs at once, all or nothing; returns their ids in order."""
        params = self._params(specs, connection)
        if not params.jobs:
            return []
        return await self._store(params)

    async def _store(self, params: EnqueueParams) -> list[int]:
        # Inside the caller's transaction we must not migrate on our own connection (the
        # caller may hold the store's write lock): their schema must already exist.
        backend = await (self._backend() if params.connection is not None else self._ready())
        results = await backend.enqueue_many(params)
        return self._announce(params, results)

    def enqueue_sync(
        self, name: str, payload: Any = None, *, connection: Any = None, **options: Any
    ) -> int:
        """Enqueue from sync code (Django, Flask, scripts); same options as :meth:`enqueue`.

        ``connection=`` takes a ``sqlite3.Connection`` or a psycopg (sync) ``Connection``.
        Safe to call from any thread, with or without a running event loop.
        """
        try:
            spec = JobSpec(name, payload, **options)
        except TypeError as exc:
            raise ValidationError(f"bad enqueue option: {exc}") from None
        return self.enqueue_many_sync([spec], connection=connection)[0]

    def enqueue_many_sync(self, specs: Iterable[JobSpec], *, connection: Any = None) -> list[int]:
        """Sync twin of :meth:`enqueue_many`."""
        params = self._params(specs, connection)
        if not params.jobs:
            return []
        if connection is not None or self.backend_name == "sqlite":
            backend = self._direct_backend()
            if connection is None and not self._migrated:
                self._run_sync(backend.migrate())  # never inside the caller's transaction
                self._migrated = True
            return self._announce(params, backend.enqueue_many_sync(params))
        return list(self._run_sync(self._store(params)))

    def _direct_backend(self) -> Backend:
        """A backend used from sync code in the calling thread (no event loop needed)."""
        with self._lock:
            if self.backend_name == "sqlite":
                if self._shared is None:
                    from conveyor.backends.sqlite.backend import SQLiteBackend

                    shared = SQLiteBackend(self.settings)
                    shared._connect_sync()
                    self._shared = shared
                return self._shared
            if self._sync_backend is None:
                self._sync_backend = backends.from_settings(self.settings)
            return self._sync_backend

    def _run_sync(self, coro: Any) -> Any:
        """Run a coroutine to completion from sync code, on the queue's portal thread."""
        with self._lock:
            if self._portal is None:
                self._portal = _Portal()
        return self._portal.run(coro)

    # -- inspection --------------------------------------------------------------------------
    async def get_job(self, job_id: int) -> Job | None:
        """The job, or None when it does not exist (or was cleaned)."""
        return await (await self._ready()).get_job(int(job_id))

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
    ) -> list[Job]:
        """Jobs matching every given filter, newest first."""
        flt = self._filter(state, name, channel, tags, tag_mode, tenant, limit, before_id)
        return await (await self._ready()).list_jobs(flt)

    @staticmethod
    def _filter(
        state: JobState | str | None,
        name: str | None,
        channel: str | None,
        tags: Sequence[str] | None,
        tag_mode: str,
        tenant: str | None,
        limit: int,
        before_id: int | None = None,
    ) -> JobFilter:
        if state is not None:
            try:
                state = JobState(state)
            except ValueError:
                raise ValidationError(
                    f"unknown state {state!r}; expected one of {[s.value for s in JobState]}"
                ) from None
        if tag_mode not in TAG_MODES:
            raise ValidationError(f"tag_mode must be one of {TAG_MODES}, got {tag_mode!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ValidationError(f"limit must be an int from 1 to 10000, got {limit!r}")
        return JobFilter(
            state=state,
            name=name,
            channel=channel,
            tags=_tags(tags) if tags is not None else None,
            tag_mode=tag_mode,
            tenant=tenant,
            limit=limit,
            before_id=before_id,
        )

    async def counts(self, channel: str | None = None) -> dict[str, int]:
        """Number of jobs per state (every state present, zero included)."""
        return await (await self._ready()).counts(channel)

    async def get_job_logs(self, job_id: int) -> list[LogRecord]:
        """Lines the handler wrote with ``ctx.log``, oldest first."""
        return await (await self._ready()).get_logs(int(job_id))

    async def get_job_events(self, job_id: int) -> list[Event]:
        """The job's stored lifecycle events, oldest first."""
        return await (await self._ready()).get_events(int(job_id))

    # -- management --------------------------------------------------------------------------
    async def cancel(self, job_id: int) -> bool:
        """Cancel an upcoming or running job. False if it had already finished (or is unknown).

        A running job gets ``ctx.cancelled`` set (async handlers are cancelled) and ends
        ``cancelled``.
        """
        backend = await self._ready()
        outcome = await backend.cancel(int(job_id), self.clock.now())
        if outcome == CancelOutcome.REQUESTED:
            for worker in list(self._workers):
                worker._cancel_local(int(job_id))
        elif outcome == CancelOutcome.CANCELLED and self._dispatcher.wants("cancelled"):
            job = await backend.get_job(int(job_id))
            if job is not None:
                self._emit("cancelled", job.id, job.name, job.tenant, job.attempts)
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
        flt = self._filter(None, name, channel, tags, tag_mode, tenant, 10_000)
        return await (await self._ready()).cancel_jobs(flt, self.clock.now())

    async def retry(self, job_id: int) -> None:
        """A failed or cancelled job back to queued, with fresh attempts (errors are kept).

        Raises:
            InvalidStateError: the job is in another state, or does not exist.
        """
        outcome = await (await self._ready()).retry(int(job_id), self.clock.now())
        if outcome == RetryOutcome.OK:
            return
        if outcome == RetryOutcome.MISSING:
            raise InvalidStateError(f"job {job_id} does not exist")
        raise InvalidStateError(
            f"job {job_id} is {outcome}; only failed or cancelled jobs can be retried"
        )

    async def pause(self, channel: str | None = None) -> None:
        """Stop every worker from starting jobs of ``channel`` (all channels when None)."""
        if channel is not None:
            validate_name(channel, "channel")
        await (await self._ready()).set_paused(channel, True)

    async def resume(self, channel: str | None = None) -> None:
        """Undo :meth:`pause` (``None`` resumes everything)."""
        if channel is not None:
            validate_name(channel, "channel")
        await (await self._ready()).set_paused(channel, False)

    async def clean(
        self, older_than: timedelta | float = timedelta(days=1), state: str = "completed"
    ) -> int:
        """Delete finished jobs (``completed``, ``failed`` or ``cancelled``) that finished
        more than ``older_than`` ago; returns how many were removed."""
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
        backend = await self._ready()
        before = self.clock.now() - age
        total = 0
        while True:
            n = await backend.prune(st, before, 1000)
            total += n
            if n < 1000:
                return total

    # -- events ------------------------------------------------------------------------------
    def on(self, event_type: str, callback: EventCallback) -> None:
        """Call ``callback(event)`` (sync or async) for events of this process's jobs."""
        self._dispatcher.on(event_type, callback)

    def off(self, event_type: str, callback: EventCallback) -> None:
        """Remove a callback registered with :meth:`on`."""
        self._dispatcher.off(event_type, callback)

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

        return attach(self, bus, rules)

    def _emit(
        self,
        type_: str,
        job_id: int,
        name: str,
        tenant: str | None,
        attempt: int,
        data: dict[str, Any] | None = None,
    ) -> None:
        if self._dispatcher.wants(type_):
            self._dispatcher.emit(
                Event(type_, job_id, name, tenant, attempt, from_ts(self.clock.now()), data or {})  # type: ignore[arg-type]
            )

    async def events(self, *, poll_timeout: float = 1.0) -> AsyncIterator[Event]:
        """Lifecycle events from every process, as they are stored (starting now)."""
        backend = await self._ready()
        _, cursor = await backend.read_events(None, 0, 0)
        while True:
            batch, cursor = await backend.read_events(cursor, 500, poll_timeout)
            for event in batch:
                yield event

    # -- cron ---------------------------------------------------------------------------------
    async def add_cron(
        self,
        name: str,
        expression: str | None = None,
        *,
        job: str | None = None,
        payload: Any = None,
        timezone: str = "UTC",
        every: timedelta | None = None,
        allow_overlap: bool = False,
        catch_up: timedelta | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        backoff: Any = None,
    ) -> CronSchedule:
        """Create or update a schedule that enqueues ``job`` (default: ``name``) on every
        tick of the cron ``expression`` in ``timezone`` (or ``every=timedelta``). An
        invalid expression or zone raises ValidationError and stores nothing."""
        from conveyor import cron

        spec = CronSpec(
            name,
            expression,
            job=job,
            payload=payload,
            timezone=timezone,
            every=every,
            allow_overlap=allow_overlap,
            catch_up=catch_up,
            priority=priority,
            attempts=attempts,
            backoff=backoff,
        )
        (record,) = await cron.upsert(self, [spec])
        return record.to_schedule()

    async def list_cron(self) -> list[CronSchedule]:
        """Every stored schedule."""
        from conveyor import cron

        return await cron.list_schedules(self)

    async def pause_cron(self, name: str) -> None:
        """Stop a schedule from firing (its pending jobs stay)."""
        from conveyor import cron

        await cron.set_paused(self, name, True)

    async def resume_cron(self, name: str) -> None:
        """Resume a paused schedule from its next tick (missed ticks are not replayed)."""
        from conveyor import cron

        await cron.set_paused(self, name, False)

    async def remove_cron(self, name: str) -> bool:
        """Delete a schedule (its pending jobs stay). False if there was none."""
        return bool(await (await self._ready()).delete_cron([name]))

    async def sync_cron(self, specs: Sequence[CronSpec]) -> None:
        """Make the stored schedules exactly ``specs`` (plus those declared with
        ``@queue.job(cron=…)``): others are removed, their pending jobs stay."""
        from conveyor import cron

        specs = list(specs)
        await cron.upsert(self, specs)
        keep = {s.name for s in specs} | {
            d.name for d in self.definitions.values() if d.cron is not None or d.every is not None
        }
        backend = await self._ready()
        stale = [r.name for r in await backend.list_cron() if r.name not in keep]
        if stale:
            await backend.delete_cron(stale)

    # -- workers -----------------------------------------------------------------------------
    def worker(
        self,
        channels: Sequence[str] | None = None,
        concurrency: int = 10,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        timeout: float | None = None,
        drain_timeout: float = 30.0,
        handle_signals: bool = False,
    ) -> Worker:
        """A worker for this queue's registered jobs; ``await worker.run()`` to start it."""
        if self.dormant:
            raise QueueDormant("the queue is dormant: set CONVEYOR_URL to run a worker")
        if os.environ.get("CONVEYOR_WORKER", "").strip().lower() in ("0", "false", "no", "off"):
            raise WorkerDisabled(
                "CONVEYOR_WORKER=false: this process only enqueues and serves status"
            )
        from conveyor.worker import Worker

        worker = Worker(
            self,
            channels=channels,
            concurrency=concurrency,
            include=include,
            exclude=exclude,
            timeout=timeout,
            drain_timeout=drain_timeout,
            handle_signals=handle_signals,
        )
        self._workers.add(worker)
        return worker

    async def run_maintenance(self) -> None:
        """One maintenance pass now: rescue expired leases, promote due jobs, fire cron
        ticks, prune by retention. Workers do this every ``sweep_interval`` by themselves."""
        from conveyor.worker.maintenance import Maintenance

        await Maintenance(self, owner="manual").run_once(force=True)

    async def _sync_definition_schedules(self) -> None:
        """Schedules declared with ``@queue.job(cron=… | every=…)``, kept in the store."""
        if any(d.cron is not None or d.every is not None for d in self.definitions.values()):
            from conveyor.cron import sync_definition_schedules

            await sync_definition_schedules(self)


class _Portal:
    """A daemon thread with its own event loop, for sync entry points."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="conveyor-portal", daemon=True
        )
        self.thread.start()

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self, queue: Queue) -> None:
        async def shutdown() -> None:
            backend = queue._backends.pop(self.loop, None)
            if backend is not None and backend is not queue._shared:
                await backend.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                self.loop.close()

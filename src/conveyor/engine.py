"""The runtime every service shares: settings, clock, registered jobs, event dispatch,
the backend for the running loop (and for sync code), and validated enqueue.

:class:`conveyor.Queue` builds one :class:`Engine` and forwards to it; the worker, its
maintenance, cron, the event bus and the built-in jobs take the engine, never the Queue.
The engine asks a backend what it can do (its capability flags) and never branches on
which backend it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from conveyor import backends, tracing
from conveyor.backends.base import (
    Backend,
    ChannelLimitRecord,
    ClaimLimit,
    EnqueueParams,
    EnqueueResult,
    NewBatch,
    NewJob,
    PruneParams,
    PruneResult,
    ResumeParams,
    TokenCompletion,
    TokenRecord,
)
from conveyor.clock import Clock, from_ts
from conveyor.definitions import JobDefinition
from conveyor.errors import QueueDormant, UnsupportedError, ValidationError
from conveyor.events import Dispatcher
from conveyor.models import Event, JobSpec, JobState, Token
from conveyor.settings import Settings
from conveyor.validation import JobBuilder, payload_json

__all__ = ["CancelListener", "ClaimRules", "Engine"]

T = TypeVar("T")
#: What every claim obeys: its limits, and the (channel, "tenant" | "group") fairness pairs.
ClaimRules = tuple[tuple[ClaimLimit, ...], tuple[tuple[str, str], ...]]

PRUNE_BATCH = 1000


class CancelListener(Protocol):
    """Something running jobs in this process (a worker) that a cancel must reach."""

    def cancel_local(self, job_id: int) -> None: ...


class Engine:
    """One queue's runtime.

    Args:
        settings: validated settings.
        clock: where every transition takes ``now`` from.
        dormant: a queue without a store: enqueue and workers raise QueueDormant.
    """

    def __init__(self, settings: Settings, clock: Clock, *, dormant: bool = False):
        self.settings = settings
        self.clock = clock
        self.dormant = dormant
        self.definitions: dict[str, JobDefinition] = {}
        self.dispatcher = Dispatcher()
        self.builder = JobBuilder(
            settings.max_payload_bytes,
            self.definitions,
            strict_names=settings.strict_names,
            require_tenant=settings.require_tenant,
        )
        self.backend_type = backends.backend_class(settings)
        self._backends: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Backend] = (
            weakref.WeakKeyDictionary()
        )
        self._connecting: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Future[Backend]
        ] = weakref.WeakKeyDictionary()
        self._shared: Backend | None = None  # for backends usable from any loop/thread
        self._sync_backend: Backend | None = None
        self._portal: _Portal | None = None
        self._migrated = False
        self._lock = threading.RLock()
        self._listeners: weakref.WeakSet[Any] = weakref.WeakSet()
        self._after_migrate: list[Callable[[], Awaitable[None]]] = []
        #: Flow control: the stored channel limits (refreshed every maintenance pass) and
        #: the claim rules built from them and the definitions (None: rebuild).
        self.channel_limits: tuple[ChannelLimitRecord, ...] = ()
        self._claim_rules: ClaimRules | None = None

    def after_migrate(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` after every migration of the store (explicit or on first use)."""
        self._after_migrate.append(hook)

    async def _migrate_backend(self, backend: Backend) -> None:
        await backend.migrate()
        await self._migrated_now()

    async def _migrated_now(self) -> None:
        self._migrated = True
        for hook in self._after_migrate:
            await hook()

    # -- registered jobs ---------------------------------------------------------------------
    def register(self, definition: JobDefinition) -> None:
        if definition.name in self.definitions:
            raise ValidationError(f"job {definition.name!r} is already registered on this queue")
        self.definitions[definition.name] = definition
        self._claim_rules = None

    # -- flow control ------------------------------------------------------------------------
    def claim_rules(self) -> ClaimRules:
        """``(limits, fair)`` for every claim: the definitions' ``Limit``/``Rate`` and the
        stored channel limits, as :class:`ClaimLimit` s and fairness pairs (cached)."""
        rules = self._claim_rules
        if rules is None:
            limits: list[ClaimLimit] = []
            for d in self.definitions.values():
                if d.concurrency is not None:
                    limits.append(ClaimLimit("name", d.name, d.concurrency.key, d.concurrency.n))
                if d.rate is not None:
                    limits.append(ClaimLimit("name", d.name, d.rate.key, d.rate.n, d.rate.seconds))
            fair: list[tuple[str, str]] = []
            for c in self.channel_limits:
                if c.concurrency is not None:
                    limits.append(ClaimLimit("channel", c.channel, None, c.concurrency))
                if c.rate_n is not None and c.rate_per is not None:
                    limits.append(ClaimLimit("channel", c.channel, None, c.rate_n, c.rate_per))
                if c.fair_by is not None:
                    fair.append((c.channel, c.fair_by))
            rules = self._claim_rules = (tuple(limits), tuple(fair))
        return rules

    async def refresh_limits(self, backend: Backend) -> None:
        """Read the stored channel limits (every maintenance pass, so running workers obey
        a change within one sweep interval)."""
        records = tuple(await backend.list_channel_limits())
        if records != self.channel_limits:
            self.channel_limits = records
            self._claim_rules = None

    # -- the backend -------------------------------------------------------------------------
    def _check_live(self) -> None:
        if self.dormant:
            raise QueueDormant("the queue is dormant: set CONVEYOR_URL to enable it")

    async def backend(self) -> Backend:
        """The backend for the running event loop (connected on first use)."""
        self._check_live()
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
            if backend.shared_across_loops:
                self._shared = backend  # one connection for every loop and thread
            self._backends[loop] = backend
            fut.set_result(backend)
            return backend
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved
            raise
        finally:
            self._connecting.pop(loop, None)

    async def ready(self) -> Backend:
        """The backend for the running loop, with the store migrated once."""
        backend = await self.backend()
        if not self._migrated:
            await backend.migrate()
            await self._migrated_now()
        return backend

    async def migrate(self) -> None:
        """Create or upgrade the store's schema (idempotent)."""
        backend = await self.backend()
        await backend.migrate()
        await self._migrated_now()

    def migration_sql(self) -> str:
        """The schema as SQL (PostgreSQL), without connecting."""
        return backends.from_settings(self.settings).migration_sql()

    def sync_backend(self) -> Backend:
        """A backend for sync code in the calling thread (no event loop needed): the shared
        one when it serves every thread, else one kept for sync transactional enqueue."""
        with self._lock:
            if self.backend_type.shared_across_loops:
                if self._shared is None:
                    self._shared = backends.from_settings(self.settings)
                return self._shared
            if self._sync_backend is None:
                self._sync_backend = backends.from_settings(self.settings)
            return self._sync_backend

    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to completion from sync code, on the engine's portal thread."""
        with self._lock:
            if self._portal is None:
                self._portal = _Portal()
        return self._portal.run(coro)

    async def close(self) -> None:
        """Close this loop's connections (and the sync portal's)."""
        if self._portal is not None:
            portal, self._portal = self._portal, None
            portal.close(self._close_portal_backend)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover
            loop = None
        backend = self._backends.pop(loop, None) if loop is not None else None
        if self._shared is not None:
            shared, self._shared = self._shared, None
            await shared.close()
        elif backend is not None:
            await backend.close()
        self._migrated = False

    async def _close_portal_backend(self) -> None:
        """Runs on the portal's loop: close the backend it connected, unless shared."""
        backend = self._backends.pop(asyncio.get_running_loop(), None)
        if backend is not None and backend is not self._shared:
            await backend.close()

    # -- events ------------------------------------------------------------------------------
    def emit(
        self,
        type_: str,
        job_id: int,
        name: str,
        tenant: str | None,
        attempt: int,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Tell this process's ``queue.on`` callbacks (no-op when nobody listens)."""
        if self.dispatcher.wants(type_):
            self.dispatcher.emit(
                Event(type_, job_id, name, tenant, attempt, from_ts(self.clock.now()), data or {})  # type: ignore[arg-type]
            )

    def wants(self, type_: str) -> bool:
        return self.dispatcher.wants(type_)

    # -- enqueue -----------------------------------------------------------------------------
    def build(
        self,
        spec: JobSpec,
        now: float,
        extra_options: dict[str, Any] | None = None,
        *,
        system: bool = False,
        checked_name: bool = False,
    ) -> NewJob:
        """One validated job row (for services that store jobs themselves, like cron;
        ``system``: the job is the queue's own, so it needs no tenant; ``checked_name``:
        its name was checked when it was scheduled)."""
        return self.builder.build(
            spec, now, extra_options, system=system, checked_name=checked_name
        )

    def _params(self, specs: Iterable[JobSpec], connection: Any) -> EnqueueParams:
        self._check_live()
        now = self.clock.now()
        jobs = self.builder.build_many(specs, now)
        if connection is not None and not self.backend_type.supports_transactions:
            raise UnsupportedError(
                f"the {self.backend_type.name} backend cannot enqueue inside your database "
                "transaction (connection=): use SQLite or PostgreSQL for transactional enqueue"
            )
        return EnqueueParams(jobs=jobs, now=now, connection=connection)

    def _announce(self, params: EnqueueParams, results: Sequence[EnqueueResult]) -> list[int]:
        wants = self.dispatcher.wants("enqueued")
        out = []
        for job, res in zip(params.jobs, results, strict=True):
            out.append(res.id)
            if wants and res.created:
                self.dispatcher.emit(
                    Event("enqueued", res.id, job.name, job.tenant, 0, from_ts(params.now))  # type: ignore[arg-type]
                )
        return out

    async def enqueue(self, specs: Iterable[JobSpec], connection: Any = None) -> list[int]:
        """Validate every spec, then store them all or none; their ids in order."""
        params = self._params(specs, connection)
        if not params.jobs:
            return []
        if tracing.ENABLED:
            with tracing.enqueue_span([job.name for job in params.jobs]):
                _store_trace(params.jobs)
                return await self._store(params)
        return await self._store(params)

    async def store(self, jobs: list[NewJob]) -> list[int]:
        """Store rows already built with :meth:`build` (all or nothing); their ids."""
        return await self._store(EnqueueParams(jobs=jobs, now=self.clock.now()))

    async def enqueue_batch(
        self, specs: Iterable[JobSpec], on_complete: JobSpec | None, connection: Any = None
    ) -> tuple[str, list[int]]:
        """Store ``specs`` as one batch (all or nothing) whose ``on_complete`` job is
        enqueued once every member has finished; (the batch id, the members' ids)."""
        specs = list(specs)
        if not specs:
            raise ValidationError("enqueue_batch needs at least one job")
        if on_complete is not None and not isinstance(on_complete, JobSpec):
            raise ValidationError(f"on_complete must be a JobSpec or None, got {on_complete!r}")
        if any(isinstance(spec, JobSpec) and spec.idempotency_key is not None for spec in specs):
            # A key that matched a stored job would make a member that is not new, and a
            # batch that could never finish: refused rather than half-counted.
            raise ValidationError("batch members cannot have an idempotency_key")
        params = self._params(specs, connection)
        batch_id = uuid.uuid4().hex
        for job in params.jobs:
            job.batch_id = batch_id
        callback = None if on_complete is None else self.builder.build(on_complete, params.now)
        params = dataclasses.replace(params, batch=NewBatch(batch_id, len(params.jobs), callback))
        if tracing.ENABLED:
            with tracing.enqueue_span([job.name for job in params.jobs]):
                _store_trace(params.jobs)
                return batch_id, await self._store(params)
        return batch_id, await self._store(params)

    async def _store(self, params: EnqueueParams) -> list[int]:
        # Inside the caller's transaction we must not migrate on our own connection (the
        # caller may hold the store's write lock): their schema must already exist.
        backend = await (self.backend() if params.connection is not None else self.ready())
        return self._announce(params, await backend.enqueue_many(params))

    def enqueue_sync(self, specs: Iterable[JobSpec], connection: Any = None) -> list[int]:
        """Sync twin of :meth:`enqueue`: in the calling thread when the backend can (a sync
        transaction, or a backend with ``sync_enqueue``), else on the portal thread."""
        params = self._params(specs, connection)
        if not params.jobs:
            return []
        if tracing.ENABLED:
            with tracing.enqueue_span([job.name for job in params.jobs]):
                _store_trace(params.jobs)
                return self._enqueue_sync(params, connection)
        return self._enqueue_sync(params, connection)

    def _enqueue_sync(self, params: EnqueueParams, connection: Any) -> list[int]:
        if connection is not None or self.backend_type.sync_enqueue:
            backend = self.sync_backend()
            if connection is None and not self._migrated:
                self.run_sync(self._migrate_backend(backend))  # never in the caller's transaction
            return self._announce(params, backend.enqueue_many_sync(params))
        return list(self.run_sync(self._store(params)))

    # -- upkeep shared by clean(), retention and the cleanup job -----------------------------
    async def prune(self, state: JobState, finished_before: float, reason: str = "clean") -> int:
        """Delete every ``state`` job finished before the given time, in bounded batches,
        with a ``removed`` event each (data ``{"reason": reason}``) to this process's
        ``queue.on`` callbacks; returns how many were removed."""
        if finished_before == -math.inf:
            return 0  # kept forever
        backend = await self.ready()
        total = 0
        while True:
            n = self.announce_removed(
                await backend.prune(PruneParams(state, finished_before, PRUNE_BATCH)), reason
            )
            total += n
            if n < PRUNE_BATCH:
                return total

    def announce_removed(self, result: PruneResult, reason: str) -> int:
        """A ``removed`` event per pruned job, when someone listens; how many there were.
        (The rows and their stored events are gone: the event is in-process only.)"""
        if self.wants("removed"):
            data = {"reason": reason}
            for job in result.removed:
                self.emit("removed", job.id, job.name, job.tenant, job.attempts, data)
        return result.count

    # -- durable waits ---------------------------------------------------------------------
    async def complete_token(self, token_id: str, data: Any = None) -> bool:
        """Complete a pending token with ``data`` (JSON, at most ``max_payload_bytes``) and
        resume the job waiting on it; False for an unknown, expired or completed token."""
        if not isinstance(token_id, str) or not token_id:
            raise ValidationError(f"a token id must be a non-empty str, got {token_id!r}")
        text = payload_json(data, self.settings.max_payload_bytes)
        backend = await self.ready()
        done = await backend.complete_token(TokenCompletion(token_id, text, self.clock.now()))
        if done.resumed and done.job_id is not None and done.job_name is not None:
            self.emit("resumed", done.job_id, done.job_name, done.tenant, done.attempt,
                      {"reason": "token"})  # fmt: skip
        return done.completed

    async def get_token(self, token_id: str) -> Token | None:
        if not isinstance(token_id, str) or not token_id:
            raise ValidationError(f"a token id must be a non-empty str, got {token_id!r}")
        record = await (await self.ready()).get_token(token_id)
        return None if record is None else self.token(record)

    def token(self, record: TokenRecord) -> Token:
        """The public view of a stored token: a pending one past its expiry is expired."""
        state = record.state
        expires = record.expires_at
        if state == "pending" and expires is not None and expires <= self.clock.now():
            state = "expired"
        return Token(
            record.id, from_ts(record.expires_at), job_id=record.job_id, state=state,
            tags=record.tags, created_at=from_ts(record.created_at),
            completed_at=from_ts(record.completed_at),
            data=None if record.data is None else json.loads(record.data),
        )  # fmt: skip

    async def resume_due(self, now: float, limit: int = 1000) -> int:
        """Waiting jobs whose wait is over (a sleep's end, a token's expiry) back to
        ``queued``, each once however many processes do this; a ``resumed`` event each."""
        backend = await self.ready()
        resumed = await backend.resume_due(ResumeParams(now, limit))
        if resumed and self.wants("resumed"):
            for job in resumed:
                data = {"reason": "due"} if job.expired_token is None else {
                    "reason": "expired", "token": job.expired_token}  # fmt: skip
                self.emit("resumed", job.id, job.name, job.tenant, job.attempts, data)
        return len(resumed)

    # -- cancels that must reach this process's running jobs ---------------------------------
    def add_cancel_listener(self, listener: CancelListener) -> None:
        self._listeners.add(listener)

    def cancel_local(self, job_id: int) -> None:
        """A running job's cancel was requested: tell every worker of this process."""
        for listener in list(self._listeners):
            listener.cancel_local(job_id)


def _store_trace(jobs: Sequence[NewJob]) -> None:
    """Store the current trace context with each job (``options["trace"]``), so its runs
    join the trace that enqueued it."""
    headers = tracing.carrier()
    if headers is None:
        return
    for job in jobs:
        options = json.loads(job.options) if job.options else {}
        options["trace"] = headers
        job.options = json.dumps(options)


class _Portal:
    """A daemon thread with its own event loop, for sync entry points."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="conveyor-portal", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self, shutdown: Any) -> None:
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                self.loop.close()

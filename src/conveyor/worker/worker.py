"""The worker: small services with one job each, under one task group.

- fetcher (:mod:`.fetcher`): claims only as many jobs as there are free slots; waits on
  a notification, a freed slot or the jittered poll;
- executor (:mod:`.executor`): one task per job, a pipeline: decode → run → classify the
  outcome (pure) → hand it to the completer;
- completer (:mod:`.completer`): the one writer of outcomes, in batches, fenced by the
  lease token;
- heartbeat (:mod:`.heartbeat`): renews every held lease in one call; picks up cancels;
- maintenance (:mod:`.maintenance`): rescue expired leases, promote due jobs, fire cron
  ticks, prune.

The Worker owns their lifecycle: start, the two-phase stop (drain, then abort) and
``run_once``. If a service crashes, the task group stops the worker loudly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from collections.abc import Sequence
from typing import Any

from conveyor import cron
from conveyor.backends.base import Backend
from conveyor.engine import Engine
from conveyor.errors import ValidationError
from conveyor.validation import validate_names
from conveyor.worker.completer import Completer
from conveyor.worker.executor import Executor
from conveyor.worker.fetcher import Fetcher, JobSelector
from conveyor.worker.heartbeat import Heartbeat
from conveyor.worker.maintenance import Maintenance
from conveyor.worker.registry import Registry

__all__ = ["Worker", "public_url"]

log = logging.getLogger("conveyor")

_SECRET_PARAMS = ("pass", "secret", "token", "key")  # query parameters never logged


def public_url(url: str) -> str:
    """``url`` without credentials, for logs: no user or password, and no query
    parameter that looks like a secret (``password=``, ``sslpassword=``, …)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    if not rest.startswith("/"):  # a host: drop everything up to the last "@"
        rest = rest.rpartition("@")[2]
    kept = [
        part
        for part in query.split("&")
        if part and not any(w in part.partition("=")[0].lower() for w in _SECRET_PARAMS)
    ]
    return f"{scheme}://{rest}" + ("?" + "&".join(kept) if kept else "")


class Worker:
    """Runs a queue's registered jobs. Build it with :meth:`conveyor.Queue.worker`."""

    def __init__(
        self,
        engine: Engine,
        *,
        channels: Sequence[str] | None = None,
        concurrency: int = 10,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        ordered: bool = True,
        timeout: float | None = None,
        drain_timeout: float = 30.0,
        handle_signals: bool = False,
    ):
        if (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or not 1 <= concurrency <= 10_000
        ):
            raise ValidationError(
                f"concurrency must be an int from 1 to 10000, got {concurrency!r}"
            )
        if isinstance(channels, str) or isinstance(include, str) or isinstance(exclude, str):
            raise ValidationError("channels, include and exclude take lists of names, not a string")
        if not isinstance(ordered, bool):
            raise ValidationError(f"ordered must be True or False, got {ordered!r}")
        if timeout is not None and not timeout > 0:
            raise ValidationError(f"timeout must be > 0 seconds, got {timeout!r}")
        if drain_timeout < 0:
            raise ValidationError(f"drain_timeout must be >= 0, got {drain_timeout!r}")
        self.engine = engine
        self.channels = validate_names(channels, "channel")
        self.include = validate_names(include, "job name")
        self.exclude = validate_names(exclude, "job name")
        self.ordered = ordered
        self.concurrency = concurrency
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self.handle_signals = handle_signals
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.executor = Executor(engine, self.id, concurrency, timeout)
        self.backend: Backend | None = None  # the store in use while running
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self._aborted = False
        self._run_task: asyncio.Task[Any] | None = None
        self._signals = 0
        engine.add_cancel_listener(self)

    @property
    def running(self) -> bool:
        """True from the start of :meth:`run` / :meth:`run_once` until it returns."""
        return self._running

    @property
    def processed(self) -> int:
        """Attempts this worker has finished (their outcomes written or refused)."""
        return self.executor.processed

    # -- lifecycle ---------------------------------------------------------------------------
    async def _start(self, *, once: bool = False) -> tuple[Backend, Completer, Fetcher]:
        if self._running:
            raise RuntimeError("this worker is already running")
        self._running = True
        self._finished.clear()  # _stopping is kept: stop() may come before run() starts
        try:
            backend = await self.engine.ready()
            await cron.sync_definition_schedules(self.engine)
            await self.engine.refresh_limits(backend)
        except BaseException:
            self._finish()  # not running: stop() and queue.close() must not wait for it
            raise
        if log.isEnabledFor(logging.INFO):
            store = public_url(self.engine.settings.url)
            channels = ",".join(self.channels) if self.channels else "all"
            log.info(
                "worker %s started%s on %s (concurrency %d, channels %s)",
                self.id,
                " for one pass" if once else "",
                store,
                self.concurrency,
                channels,
                extra={
                    "event": "worker_started",
                    "worker_id": self.id,
                    "store": store,
                    "concurrency": self.concurrency,
                    "channels": channels,
                },
            )
        self.backend = backend
        completer = Completer(backend)
        self.executor.start(backend, completer)
        selector = JobSelector(self.channels, self.include, self.exclude, self.ordered)
        fetcher = Fetcher(self.engine, self.id, selector, self.executor, completer, self._stopping)
        return backend, completer, fetcher

    def _finish(self) -> None:
        self.executor.close()
        self._running = False
        self._stopping.clear()
        self._done.clear()
        self._finished.set()

    async def run(self) -> None:
        """Process jobs until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``)."""
        backend, completer, fetcher = await self._start()
        self._run_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if self.handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.interrupt, sig)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(completer.run(), name="conveyor-completer")
                heartbeat = Heartbeat(self.engine, self.executor)
                tg.create_task(heartbeat.run(backend, self._done), name="conveyor-heartbeat")
                maintenance = Maintenance(self.engine, self.id)
                tg.create_task(maintenance.run(self._done), name="conveyor-maintenance")
                registry = Registry(
                    self.engine, self.id, self.channels, self.concurrency, self.executor
                )
                tg.create_task(registry.run(backend, self._done), name="conveyor-registry")
                await fetcher.run(backend)
                await self.executor.drain(self.drain_timeout)
                await self._flush_or_abandon(completer)
                self._done.set()
        except* asyncio.CancelledError:
            if not self._aborted:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        finally:
            if self.handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            self._finish()
            log.info(
                "worker %s stopped",
                self.id,
                extra={"event": "worker_stopped", "worker_id": self.id},
            )

    async def run_once(self) -> int:
        """Process what is due now, then return (for cron-triggered or serverless runs).

        Runs the jobs that existed when it started (and their retries that fall due
        meanwhile); jobs enqueued while it runs are left for the next run, so a job that
        enqueues more work cannot keep it going forever. Returns how many attempts ran.
        """
        backend, completer, fetcher = await self._start(once=True)
        start = self.processed
        born_after = self.engine.clock.now()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(completer.run(), name="conveyor-completer")
                heartbeat = Heartbeat(self.engine, self.executor)
                tg.create_task(heartbeat.run(backend, self._done), name="conveyor-heartbeat")
                await Maintenance(self.engine, self.id).run_once(force=True)
                await fetcher.run_due(born_after)
                await self.executor.drain(self.drain_timeout)
                await completer.drain()
                completer.stop()
                self._done.set()
        finally:
            self._finish()
        return self.processed - start

    async def stop(self, drain_timeout: float | None = None) -> None:
        """Stop fetching, let running jobs finish (up to the drain timeout), then cancel
        the rest and put them back as queued without using up an attempt."""
        if drain_timeout is not None:
            self.drain_timeout = drain_timeout
        self.request_stop()
        if self._running:
            await self._finished.wait()

    def request_stop(self) -> None:
        """Begin a graceful stop and return at once (:meth:`stop` also waits for it)."""
        self._stopping.set()
        if self.backend is not None:
            self.backend.wake()

    def abort(self) -> None:
        """Stop at once: running jobs are abandoned without writing anything; their
        leases expire and they are rescued (a stall: no attempt used up, up to
        ``max_stalls``)."""
        self._aborted = True
        self._stopping.set()
        self.executor.stop_all("abort")
        if self._run_task is not None and not self._run_task.done():
            self._run_task.cancel()

    def interrupt(self, sig: int = signal.SIGTERM) -> None:
        """What a stop signal means: the first drains, the next stops at once."""
        self._signals += 1
        name = signal.Signals(sig).name
        if self._signals == 1:
            log.warning("received %s: draining (send it again to stop at once)", name)
            self.request_stop()
        else:
            log.warning("received %s again: stopping now", name)
            self.abort()

    def cancel_local(self, job_id: int) -> None:
        """A cancel was requested for ``job_id``: stop it if this worker runs it."""
        self.executor.stop(job_id, "cancel")

    async def _flush_or_abandon(self, completer: Completer) -> None:
        """Record what is pending, but never hold a stopping worker hostage to a store
        that is down: past the drain timeout, unrecorded outcomes are abandoned (their
        leases expire and the jobs are rescued)."""
        try:
            await asyncio.wait_for(completer.drain(), max(5.0, self.drain_timeout))
        except TimeoutError:
            log.error(
                "could not record %d outcome(s) before stopping; their jobs will be rescued "
                "when their leases expire",
                completer.backlog,
            )
            self._aborted = True
            raise asyncio.CancelledError from None
        completer.stop()

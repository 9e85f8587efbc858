"""The worker: small services under one task group.

- fetcher: claims only as many jobs as there are free slots; waits on a notification,
  a freed slot or the jittered poll;
- executor: one task per job, a pipeline: decode → run (async, thread or child process)
  → classify the outcome (pure) → hand it to the completer;
- completer: writes outcomes in batches, fenced by the lease token;
- heartbeat: renews every held lease in one call; picks up cancellations;
- maintenance: rescue expired leases, promote due jobs, fire cron ticks, prune.

If a side service crashes, the task group stops the worker loudly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import socket
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from conveyor._json import ENCODER
from conveyor.backends.base import (
    Backend,
    ClaimedJob,
    ClaimParams,
    HeartbeatParams,
    LogEntry,
    Outcome,
)
from conveyor.clock import from_ts
from conveyor.context import Context
from conveyor.errors import BackendError, ValidationError
from conveyor.models import JobState
from conveyor.retry import DEFAULT_BACKOFF, Backoff, Fatal
from conveyor.settings import validate_name
from conveyor.worker.child import ChildFailed, run_in_child
from conveyor.worker.completer import Completer
from conveyor.worker.maintenance import Maintenance
from conveyor.worker.outcome import RunResult, classify

if TYPE_CHECKING:
    from conveyor.queue import Queue

__all__ = ["Worker"]

log = logging.getLogger("conveyor")

_NO_OPTIONS: dict[str, Any] = {}  # shared, never mutated
#: Why the worker cancelled a handler → how the attempt ended.
_CANCEL_STATUS = {"timeout": "timeout", "drain": "drained", "cancel": "cancelled"}


class _Active:
    """A claimed job this worker holds: its task, context and deadline timer."""

    __slots__ = ("ctx", "extra", "handler_done", "job", "task", "timer")

    def __init__(self, job: ClaimedJob):
        self.job = job
        self.task: asyncio.Task[None] | None = None
        self.ctx: Context | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.handler_done = False
        self.extra: dict[str, Any] = {}


class Worker:
    """Runs a queue's registered jobs. Build it with :meth:`conveyor.Queue.worker`."""

    def __init__(
        self,
        queue: Queue,
        *,
        channels: Sequence[str] | None = None,
        concurrency: int = 10,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
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
        if timeout is not None and not timeout > 0:
            raise ValidationError(f"timeout must be > 0 seconds, got {timeout!r}")
        if drain_timeout < 0:
            raise ValidationError(f"drain_timeout must be >= 0, got {drain_timeout!r}")
        self.queue = queue
        self.channels = tuple(validate_name(c, "channel") for c in channels) if channels else None
        self.include = tuple(validate_name(n, "job name") for n in include) if include else None
        self.exclude = tuple(validate_name(n, "job name") for n in exclude) if exclude else None
        self.concurrency = concurrency
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self.handle_signals = handle_signals
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._active: dict[int, _Active] = {}
        self._busy = 0
        self._backend: Backend | None = None
        self._completer: Completer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stopping = asyncio.Event()
        self._done = asyncio.Event()
        self._slot = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self._aborted = False
        self._run_task: asyncio.Task[Any] | None = None
        self._newborn = False
        self._signals = 0
        self.processed = 0

    # -- lifecycle ---------------------------------------------------------------------------
    async def _start(self) -> tuple[Backend, Completer]:
        if self._running:
            raise RuntimeError("this worker is already running")
        self._running = True
        self._finished.clear()  # _stopping is kept: stop() may come before run() starts
        backend = await self.queue._ready()
        await self.queue._sync_definition_schedules()
        self._backend = backend
        self._completer = Completer(backend)
        self._pool = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="conveyor-job"
        )
        return backend, self._completer

    def _finish(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._running = False
        self._stopping.clear()
        self._done.clear()
        self._finished.set()

    async def run(self) -> None:
        """Process jobs until :meth:`stop` (or SIGTERM/SIGINT with ``handle_signals``)."""
        backend, completer = await self._start()
        self._run_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if self.handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig)
        log.info(
            "worker %s started (concurrency %d, channels %s)",
            self.id,
            self.concurrency,
            ",".join(self.channels) if self.channels else "all",
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(completer.run(), name="conveyor-completer")
                tg.create_task(self._heartbeat_loop(backend), name="conveyor-heartbeat")
                tg.create_task(self._maintenance_loop(), name="conveyor-maintenance")
                await self._fetch_loop(backend)
                await self._drain()
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
            log.info("worker %s stopped", self.id)

    async def run_once(self) -> int:
        """Process what is due now, then return (for cron-triggered or serverless runs).

        Runs the jobs that existed when it started (and their retries that fall due
        meanwhile); jobs enqueued while it runs are left for the next run, so a job that
        enqueues more work cannot keep it going forever. Returns how many attempts ran.
        """
        backend, completer = await self._start()
        start = self.processed
        born_after = self.queue.clock.now()
        self._newborn = False
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(completer.run(), name="conveyor-completer")
                tg.create_task(self._heartbeat_loop(backend), name="conveyor-heartbeat")
                await Maintenance(self.queue, self.id).run_once(force=True)
                while not self._stopping.is_set() and not self._newborn:
                    free = self.concurrency - self._busy
                    jobs = await self._claim(backend, free, born_after) if free > 0 else []
                    if not jobs and self._busy == 0:
                        # Outcomes still in flight may requeue a job that is due now.
                        await completer.drain()
                        if self._newborn or not await self._claim(backend, free, born_after):
                            break
                        continue
                    if not jobs:
                        self._slot.clear()
                        await self._slot.wait()
                await self._drain()
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
        self._stopping.set()
        if self._backend is not None:
            self._backend.wake()
        if self._running:
            await self._finished.wait()

    def abort(self) -> None:
        """Stop at once: running jobs are abandoned without writing anything; their
        leases expire and they are rescued (the attempt counts)."""
        self._aborted = True
        self._stopping.set()
        for a in self._active.values():
            if a.task is not None and not a.task.done():
                if a.ctx is not None:
                    a.ctx._cancel("abort")
                else:
                    a.extra["reason"] = "abort"
                a.task.cancel()
        if self._run_task is not None and not self._run_task.done():
            self._run_task.cancel()

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning(
                "received %s: draining (send it again to stop at once)", signal.Signals(sig).name
            )
            self._stopping.set()
            if self._backend is not None:
                self._backend.wake()
        else:
            log.warning("received %s again: stopping now", signal.Signals(sig).name)
            self.abort()

    # -- fetcher -----------------------------------------------------------------------------
    def _claim_params(self, limit: int) -> ClaimParams:
        now = self.queue.clock.now()
        return ClaimParams(
            worker_id=self.id,
            token=uuid.uuid4().hex,
            limit=limit,
            now=now,
            lease_expires_at=now + self.queue.settings.lease,
            channels=self.channels,
            include=self.include,
            exclude=self.exclude,
        )

    async def _claim(
        self, backend: Backend, limit: int, born_after: float | None = None
    ) -> list[ClaimedJob]:
        params = self._claim_params(limit)
        jobs = await backend.claim(params)
        started = []
        for job in jobs:
            if born_after is not None and job.created_at > born_after:
                # run_once: enqueued after it started; back to queued, attempt refunded.
                self._newborn = True
                assert self._completer is not None
                outcome = classify(job, RunResult("drained"), params.now, DEFAULT_BACKOFF)
                self._completer.submit(outcome, [], lambda o, ok: None)
                continue
            self._launch(job)
            started.append(job)
        return started

    async def _exchange(self, backend: Backend, completer: Completer, limit: int) -> int:
        """Claim up to ``limit`` jobs and launch them; outcomes waiting to be recorded go
        in the same round trip. Returns how many jobs were claimed."""
        batch = completer.take()
        try:
            params = self._claim_params(limit)
            if batch:
                await completer.write_logs(batch)
                applied, jobs = await backend.complete_and_claim([o for o, _, _ in batch], params)
            else:
                jobs = await backend.claim(params)
        except BaseException:
            if batch:
                completer.put_back(batch)
            raise
        if batch:
            completer.settle(batch, applied)
        for job in jobs:
            self._launch(job)
        return len(jobs)

    async def _fetch_loop(self, backend: Backend) -> None:
        """Claim jobs for free slots until stopped, one claim at a time; the outcomes
        finished meanwhile go with each claim (one round trip for both). A claim that
        comes back short means the queue is empty for us: then wait for a wake-up or
        the jittered poll, and let the completer record outcomes by itself. The wait
        carries a claim for the free slots; jobs the backend hands over under it start
        like claimed ones (also when stopping: they are ours, like the jobs running)."""
        assert self._completer is not None
        completer = self._completer
        poll = self.queue.settings.poll_interval
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                # let jobs finishing in this tick free their slots (and hand over their
                # outcomes) first
                completer.set_handoff(True)
                await asyncio.sleep(0)
                free = self.concurrency - self._busy
                if free <= 0:
                    self._slot.clear()
                    await self._slot.wait()
                    continue
                try:
                    claimed = await self._exchange(backend, completer, free)
                    backoff = 0.1
                except BackendError as exc:
                    completer.set_handoff(False)
                    log.warning("claiming jobs failed: %s; retrying in %.1fs", exc, backoff)
                    await self._sleep(backoff * random.uniform(0.5, 1.0))
                    backoff = min(backoff * 2, 10.0)
                    continue
                if claimed < free and not self._stopping.is_set():
                    completer.set_handoff(False)
                    # the free slots stand as a claim while we wait: a backend that can
                    # hand jobs over claims them for us and returns them
                    standing = self._claim_params(self.concurrency - self._busy)
                    try:
                        handed = await backend.wait_for_work(
                            poll * random.uniform(0.8, 1.0), standing
                        )
                    except BackendError as exc:
                        log.warning("waiting for work failed: %s", exc)
                        await self._sleep(backoff)
                        continue
                    for job in handed:
                        self._launch(job)
        finally:
            completer.set_handoff(False)

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

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _drain(self) -> None:
        tasks = [a.task for a in self._active.values() if a.task is not None and not a.task.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.drain_timeout)
            for a in list(self._active.values()):
                if a.task in pending:
                    if a.ctx is not None:
                        a.ctx._cancel("drain")
                    else:
                        a.extra["reason"] = "drain"
                    a.task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self._completer is not None:
            await self._completer.drain()

    # -- executor -----------------------------------------------------------------------------
    def _launch(self, job: ClaimedJob) -> None:
        active = _Active(job)
        self._active[job.id] = active
        self._busy += 1
        active.task = asyncio.create_task(self._execute(active), name=f"conveyor-job-{job.id}")
        self.queue._emit("started", job.id, job.name, job.tenant, job.attempts)

    async def _execute(self, a: _Active) -> None:
        job = a.job
        queue = self.queue
        definition = queue.definitions.get(job.name)
        backoff: Backoff = DEFAULT_BACKOFF
        run: RunResult
        try:
            if definition is None:
                run = RunResult(
                    "orphaned",
                    message=f"no handler is registered for job {job.name!r} in worker {self.id}",
                )
            else:
                backoff = definition.backoff or DEFAULT_BACKOFF
                run, backoff = await self._run_handler(a, definition, backoff)
        except asyncio.CancelledError:
            # Cancelled before the handler started (e.g. drained while decoding).
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            run = RunResult("drained")
        reason = a.ctx.cancel_reason if a.ctx is not None else a.extra.get("reason")
        if a.timer is not None:
            a.timer.cancel()
        self._busy -= 1
        self._slot.set()
        if reason in ("lost", "abort"):
            # lost: rescued elsewhere, the rescue's outcome stands; abort: leave the lease
            # to expire so the job is rescued.
            self._active.pop(job.id, None)
            return
        if reason == "cancel" and run.status in ("ok", "error", "timeout"):
            run = RunResult("cancelled")
        outcome = classify(job, run, queue.clock.now(), backoff)
        logs = (
            [
                LogEntry(job.id, at, level, message, job.attempts)
                for at, level, message in a.ctx._logs
            ]
            if (a.ctx is not None)
            else []
        )
        assert self._completer is not None
        self._completer.submit(outcome, logs, self._recorded)

    async def _run_handler(
        self, a: _Active, definition: Any, backoff: Backoff
    ) -> tuple[RunResult, Backoff]:
        job = a.job
        queue = self.queue
        try:
            payload = json.loads(job.payload)
            options = json.loads(job.options) if job.options else _NO_OPTIONS
            if "backoff" in options:
                backoff = Backoff.from_dict(options["backoff"])
        except (ValueError, TypeError, ValidationError) as exc:
            return RunResult("error", exc=Fatal(f"job row cannot be decoded: {exc}")), backoff
        timeout = options.get("timeout") or definition.timeout or self.timeout
        kill = options.get("kill_on_timeout", definition.kill_on_timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        cron = options.get("cron") or _NO_OPTIONS
        ctx = Context(
            job_id=job.id,
            name=job.name,
            attempt=job.attempts,
            max_attempts=job.max_attempts,
            tenant=job.tenant,
            channel=job.channel,
            tags=job.tags,
            priority=job.priority,
            clock=queue.clock.now,
            progress=lambda p: self._progress(job, p),
            deadline=deadline,
            schedule=cron.get("schedule"),
            scheduled_for=from_ts(cron.get("tick")),
            replayed=bool(cron.get("replayed", False)),
        )
        ctx._loop = loop
        a.ctx = ctx
        if a.extra.get("reason") == "drain":
            ctx._cancel("drain")
        if deadline is not None and not kill:
            a.timer = loop.call_at(deadline, self._check_deadline, a)
        try:
            if kill and timeout:
                value = await run_in_child(
                    definition.fn,
                    job.payload,
                    ctx,
                    lambda: ctx.deadline is not None and loop.time() >= ctx.deadline,
                )
            elif definition.is_async:
                value = await definition.fn(payload, ctx)
            else:
                assert self._pool is not None
                value = await loop.run_in_executor(self._pool, definition.fn, payload, ctx)
            if ctx.cancel_reason is not None:
                # The handler swallowed our cancellation and returned: the timeout, cancel
                # or drain still decides the outcome.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    task.uncancel()
                return RunResult(_CANCEL_STATUS.get(ctx.cancel_reason, "drained")), backoff
            try:
                result = "null" if value is None else ENCODER.encode(value)
            except (TypeError, ValueError) as exc:
                return RunResult(
                    "error", exc=TypeError(f"handler result is not JSON-serialisable: {exc}")
                ), backoff
            return RunResult("ok", result), backoff
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            reason = ctx.cancel_reason
            if reason is None:  # a stray CancelledError raised by the handler itself
                return RunResult("error", exc=exc, message="handler raised CancelledError"), backoff
            if task is not None and task.cancelling():
                task.uncancel()
            return RunResult(_CANCEL_STATUS.get(reason, "drained")), backoff
        except TimeoutError as exc:
            if ctx.cancel_reason == "timeout" or (
                kill and ctx.deadline and loop.time() >= ctx.deadline
            ):
                return RunResult("timeout", message=str(exc) or None), backoff
            return RunResult("error", exc=exc), backoff
        except ChildFailed as exc:
            return RunResult("error", exc=exc, message=f"{exc.type_name}: {exc}"), backoff
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: fail this attempt only
            return RunResult("error", exc=exc), backoff

    def _check_deadline(self, a: _Active) -> None:
        ctx = a.ctx
        if ctx is None or a.task is None or a.task.done() or ctx.deadline is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < ctx.deadline:
            a.timer = loop.call_at(ctx.deadline, self._check_deadline, a)
            return
        ctx._cancel("timeout")
        a.task.cancel()

    async def _progress(self, job: ClaimedJob, value: int) -> None:
        assert self._backend is not None
        now = self.queue.clock.now()
        if await self._backend.set_progress(job.id, job.token, value, now):
            self.queue._emit(
                "progress", job.id, job.name, job.tenant, job.attempts, {"progress": value}
            )

    def _recorded(self, outcome: Outcome, applied: bool) -> None:
        a = self._active.pop(outcome.job_id, None)
        self.processed += 1
        if not applied or a is None:
            if not applied:
                log.warning(
                    "job %s: outcome %s was not recorded (its lease was lost)",
                    outcome.job_id,
                    outcome.event,
                )
            return
        job = a.job
        attempt = job.attempts - (1 if outcome.refund_attempt else 0)
        queue = self.queue
        if queue._dispatcher.wants(outcome.event):
            data: dict[str, Any] = {}
            if outcome.error is not None:
                data["error"] = json.loads(outcome.error)
            if outcome.result is not None:
                data["result"] = json.loads(outcome.result)
            queue._emit(outcome.event, job.id, job.name, job.tenant, attempt, data)
        if outcome.state is JobState.COMPLETED and outcome.remove:
            queue._emit("removed", job.id, job.name, job.tenant, attempt)

    def _cancel_local(self, job_id: int) -> None:
        a = self._active.get(job_id)
        if a is None or a.task is None or a.task.done() or a.handler_done:
            return
        if a.ctx is not None:
            a.ctx._cancel("cancel")
        else:
            a.extra["reason"] = "cancel"
        a.task.cancel()

    # -- heartbeat ----------------------------------------------------------------------------
    async def _heartbeat_loop(self, backend: Backend) -> None:
        settings = self.queue.settings
        tick = min(1.0, settings.heartbeat_interval)
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + settings.heartbeat_interval
        while not self._done.is_set():
            try:
                await asyncio.wait_for(self._done.wait(), tick)
                return
            except TimeoutError:
                pass
            if not self._active:
                next_beat = loop.time() + settings.heartbeat_interval
                continue
            try:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + settings.heartbeat_interval
                    await self._beat(backend)
                else:
                    running = [
                        i
                        for i, a in self._active.items()
                        if a.task is not None and not a.task.done()
                    ]
                    for job_id in await backend.cancel_requests(running):
                        self._cancel_local(job_id)
            except BackendError as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _beat(self, backend: Backend) -> None:
        now = self.queue.clock.now()
        held = [(i, a.job.token) for i, a in self._active.items()]
        result = await backend.heartbeat(
            HeartbeatParams(jobs=held, now=now, lease_expires_at=now + self.queue.settings.lease)
        )
        for job_id in result.lost:
            a = self._active.get(job_id)
            if a is None:
                continue
            log.warning("job %s: lease lost (rescued elsewhere); abandoning this run", job_id)
            if a.task is not None and not a.task.done():
                if a.ctx is not None:
                    a.ctx._cancel("lost")
                else:
                    a.extra["reason"] = "lost"
                a.task.cancel()
        for job_id in result.cancel_requested:
            self._cancel_local(job_id)

    # -- maintenance --------------------------------------------------------------------------
    async def _maintenance_loop(self) -> None:
        maintenance = Maintenance(self.queue, self.id)
        interval = self.queue.settings.sweep_interval
        while not self._done.is_set():
            try:
                await maintenance.run_once()
            except BackendError as exc:
                log.warning("maintenance pass failed: %s", exc)
            try:
                await asyncio.wait_for(self._done.wait(), interval * random.uniform(0.8, 1.2))
                return
            except TimeoutError:
                pass

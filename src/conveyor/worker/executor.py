"""The executor: one task per claimed job, each a pipeline.

decode → run (async, a thread, or a killable child process) → classify the outcome (a
pure function, :func:`conveyor.worker.outcome.classify`) → hand it to the completer,
which writes it; once written, the job's slot is released and its events are emitted.

A running job is stopped through :meth:`Running.stop` with a reason, whatever asks:
a timeout, a cancel, a drain, a lost lease or an abort.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conveyor import tracing
from conveyor._json import ENCODER, clean_text
from conveyor.backends.base import Backend, ClaimedJob, LogEntry, Outcome, ProgressUpdate
from conveyor.clock import from_ts
from conveyor.context import Context, Control, Suspend
from conveyor.definitions import JobDefinition
from conveyor.engine import Engine
from conveyor.errors import ValidationError
from conveyor.models import JobState
from conveyor.retry import DEFAULT_BACKOFF, Backoff, Fatal, Snooze
from conveyor.worker.child import ChildFailed, run_in_child
from conveyor.worker.completer import Completer
from conveyor.worker.durable import JobDurable
from conveyor.worker.outcome import RunResult, classify

__all__ = ["Executor", "Running"]

log = logging.getLogger("conveyor")

_NO_OPTIONS: dict[str, Any] = {}  # shared, never mutated
#: Why the worker stopped a handler → how the attempt ended.
_CANCEL_STATUS = {"timeout": "timeout", "drain": "drained", "cancel": "cancelled"}
#: Reasons after which this worker writes nothing: ``lost`` (rescued elsewhere, the
#: rescue's outcome stands) and ``abort`` (the lease is left to expire).
_SILENT = ("lost", "abort")
#: How an attempt may end that a cancel requested meanwhile overrides.
_CANCELLABLE = ("ok", "error", "timeout", "snoozed", "suspended")


class Running:
    """A claimed job this worker holds: its task, its context's control and its timer
    (and, for its log line, when it started, how long it ran and what it raised)."""

    __slots__ = ("control", "elapsed", "error", "job", "started", "task", "timer")

    def __init__(self, job: ClaimedJob):
        self.job = job
        self.control = Control()
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.started = time.monotonic()
        self.elapsed = 0.0
        self.error: BaseException | None = None

    @property
    def live(self) -> bool:
        return self.task is not None and not self.task.done()

    def stop(self, reason: str) -> None:
        """Stop the handler for ``reason`` (the first reason given wins)."""
        if self.live:
            self.control.cancel(reason)
            assert self.task is not None
            self.task.cancel()


class Executor:
    """Runs claimed jobs, at most ``concurrency`` at once."""

    def __init__(
        self,
        engine: Engine,
        worker_id: str,
        concurrency: int,
        default_timeout: float | None,
    ):
        self.engine = engine
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.default_timeout = default_timeout
        self.running: dict[int, Running] = {}
        self.busy = 0
        self.processed = 0
        self.slot = asyncio.Event()  # set whenever a job frees its slot
        self._backend: Backend | None = None
        self._completer: Completer | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def free(self) -> int:
        return self.concurrency - self.busy

    def start(self, backend: Backend, completer: Completer) -> None:
        self._backend, self._completer = backend, completer
        self._pool = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="conveyor-job"
        )

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def wait_for_slot(self) -> None:
        self.slot.clear()
        await self.slot.wait()

    # -- control ----------------------------------------------------------------------------
    def stop(self, job_id: int, reason: str) -> None:
        """Stop one running job (``cancel``, ``lost``)."""
        running = self.running.get(job_id)
        if running is not None:
            running.stop(reason)

    def stop_all(self, reason: str) -> None:
        for running in list(self.running.values()):
            running.stop(reason)

    def live_ids(self) -> list[int]:
        return [i for i, r in self.running.items() if r.live]

    def leases(self) -> list[tuple[int, str]]:
        return [(i, r.job.token) for i, r in self.running.items()]

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for running jobs; stop the rest (they go back to queued
        without using up an attempt). Their outcomes are then with the completer: the
        caller decides how long to wait for them to be written."""
        tasks = [r.task for r in self.running.values() if r.task is not None and r.live]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for running in list(self.running.values()):
                if running.task in pending:
                    running.stop("drain")
            if pending:
                await asyncio.wait(pending)

    # -- the pipeline -----------------------------------------------------------------------
    def launch(self, job: ClaimedJob) -> None:
        running = Running(job)
        self.running[job.id] = running
        self.busy += 1
        running.task = asyncio.create_task(self._execute(running), name=f"conveyor-job-{job.id}")
        if self.engine.wants("started"):  # what a metrics listener needs, without a read
            data = {"channel": job.channel, "run_at": job.run_at}
            self.engine.emit("started", job.id, job.name, job.tenant, job.attempts, data)

    def refund(self, job: ClaimedJob, now: float) -> None:
        """Give a claimed job straight back (queued, attempt refunded) without running it."""
        assert self._completer is not None
        outcome = classify(job, RunResult("drained"), now, DEFAULT_BACKOFF)
        self._completer.submit(outcome, [], lambda o, ok: None)

    async def _execute(self, r: Running) -> None:
        job = r.job
        definition = self.engine.definitions.get(job.name)
        backoff: Backoff = DEFAULT_BACKOFF
        run: RunResult
        try:
            if definition is None:
                run = RunResult(
                    "orphaned",
                    message=f"no handler is registered for job {job.name!r} in worker {self.worker_id}",
                )
            else:
                backoff = definition.backoff or DEFAULT_BACKOFF
                if tracing.ENABLED:
                    run, backoff = await self._traced(r, definition, backoff)
                else:
                    run, backoff = await self._run_handler(r, definition, backoff)
        except asyncio.CancelledError:
            # Cancelled before the handler started (e.g. drained while decoding).
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            run = RunResult("drained")
        r.elapsed, r.error = time.monotonic() - r.started, run.exc
        reason = r.control.cancel_reason
        if r.timer is not None:
            r.timer.cancel()
        self.busy -= 1
        self.slot.set()
        if reason in _SILENT:
            self.running.pop(job.id, None)
            return
        if reason == "cancel" and run.status in _CANCELLABLE:
            run = RunResult("cancelled")
        outcome = classify(job, run, self.engine.clock.now(), backoff)
        logs = [
            LogEntry(job.id, job.token, at, level, clean_text(msg), job.attempts)
            for at, level, msg in r.control.logs
        ]
        assert self._completer is not None
        self._completer.submit(outcome, logs, self._recorded)

    async def _traced(
        self, r: Running, definition: JobDefinition, backoff: Backoff
    ) -> tuple[RunResult, Backoff]:
        """:meth:`_run_handler` inside a run span (the ``otel`` extra)."""
        job = r.job
        stored = None
        if job.options and '"trace"' in job.options:
            try:
                stored = json.loads(job.options).get("trace")
            except ValueError:
                stored = None
        with tracing.run_span(job.name, job.id, job.channel, job.attempts, stored) as span:
            run, backoff = await self._run_handler(r, definition, backoff)
            tracing.record_outcome(span, run.status, run.exc)
        return run, backoff

    async def _run_handler(
        self, r: Running, definition: JobDefinition, backoff: Backoff
    ) -> tuple[RunResult, Backoff]:
        job = r.job
        try:
            payload = json.loads(job.payload)
            options = json.loads(job.options) if job.options else _NO_OPTIONS
            if "backoff" in options:
                backoff = Backoff.from_dict(options["backoff"])
        except (ValueError, TypeError, ValidationError) as exc:
            return RunResult("error", exc=Fatal(f"job row cannot be decoded: {exc}")), backoff
        timeout = options.get("timeout") or definition.timeout or self.default_timeout
        kill = options.get("kill_on_timeout", definition.kill_on_timeout)
        loop = asyncio.get_running_loop()
        control = r.control
        control.loop = loop
        control.deadline = loop.time() + timeout if timeout else None
        control.timeout = float(timeout) if timeout else None
        cron = options.get("cron") or _NO_OPTIONS
        durable = None
        if definition.is_async and not kill:
            assert self._backend is not None
            durable = JobDurable(self.engine, self._backend, job, control)
        ctx = Context(
            job_id=job.id,
            name=job.name,
            attempt=job.attempts,  # runs started, stalled ones included, so the bound
            max_attempts=job.max_attempts + job.stalls,  # is one more per stalled run
            tenant=job.tenant,
            channel=job.channel,
            tags=job.tags,
            priority=job.priority,
            clock=self.engine.clock.now,
            progress=lambda p: self._progress(job, p),
            control=control,
            schedule=cron.get("schedule"),
            scheduled_for=from_ts(cron.get("tick")),
            replayed=bool(cron.get("replayed", False)),
            durable=durable,
            batch=options.get("batch"),
            dependencies=lambda: self._dependency_results(job),
        )
        if control.deadline is not None and not kill:
            r.timer = loop.call_at(control.deadline, self._check_deadline, r)
        try:
            if kill and timeout:
                value = await run_in_child(
                    definition.fn,
                    job.payload,
                    ctx,
                    control,
                    lambda: control.deadline is not None and loop.time() >= control.deadline,
                )
            elif definition.is_async:
                value = await definition.fn(payload, ctx)
            else:
                assert self._pool is not None
                value = await loop.run_in_executor(self._pool, definition.fn, payload, ctx)
            if control.cancel_reason is not None:
                # The handler swallowed our cancellation and returned: the timeout, cancel
                # or drain still decides the outcome.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    task.uncancel()
                return RunResult(_CANCEL_STATUS.get(control.cancel_reason, "drained")), backoff
            try:
                result = "null" if value is None else clean_text(ENCODER.encode(value))
            except (TypeError, ValueError) as exc:
                return RunResult(
                    "error", exc=TypeError(f"handler result is not JSON-serialisable: {exc}")
                ), backoff
            return RunResult("ok", result), backoff
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            reason = control.cancel_reason
            if reason is None:  # a stray CancelledError raised by the handler itself
                return RunResult("error", exc=exc, message="handler raised CancelledError"), backoff
            if task is not None and task.cancelling():
                task.uncancel()
            return RunResult(_CANCEL_STATUS.get(reason, "drained")), backoff
        except TimeoutError as exc:
            if control.cancel_reason == "timeout" or (
                kill and control.deadline and loop.time() >= control.deadline
            ):
                return RunResult("timeout", message=str(exc) or None), backoff
            return RunResult("error", exc=exc), backoff
        except Suspend as exc:  # ctx.sleep / ctx.wait_for_token: wait, holding nothing
            return RunResult("suspended", exc=exc), backoff
        except Snooze as exc:
            return RunResult("snoozed", exc=exc), backoff
        except ChildFailed as exc:
            return RunResult("error", exc=exc, message=f"{exc.type_name}: {exc}"), backoff
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: fail this attempt only
            return RunResult("error", exc=exc), backoff

    async def _dependency_results(self, job: ClaimedJob) -> dict[int, Any]:
        assert self._backend is not None
        stored = await self._backend.dependency_results(job.id)
        return {k: None if v is None else json.loads(v) for k, v in stored.items()}

    def _check_deadline(self, r: Running) -> None:
        deadline = r.control.deadline
        if not r.live or deadline is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:
            r.timer = loop.call_at(deadline, self._check_deadline, r)
            return
        extra = r.control.extension()  # ctx.on_timeout may buy more time
        if extra is not None:
            r.control.deadline = loop.time() + extra
            r.timer = loop.call_at(r.control.deadline, self._check_deadline, r)
            return
        r.stop("timeout")

    async def _progress(self, job: ClaimedJob, value: int) -> None:
        assert self._backend is not None
        update = ProgressUpdate(job.id, job.token, value, self.engine.clock.now())
        if await self._backend.set_progress(update):
            self.engine.emit(
                "progress", job.id, job.name, job.tenant, job.attempts, {"progress": value}
            )

    def _recorded(self, outcome: Outcome, applied: bool) -> None:
        r = self.running.pop(outcome.job_id, None)
        self.processed += 1
        if not applied or r is None:
            if not applied:
                log.warning(
                    "job %s: outcome %s was not recorded (its lease was lost)",
                    outcome.job_id,
                    outcome.event,
                )
            return
        job = r.job
        attempt = job.attempts - (1 if outcome.refund_attempt else 0)
        engine = self.engine
        if engine.wants(outcome.event):
            data: dict[str, Any] = {}
            if outcome.error is not None:
                data["error"] = json.loads(outcome.error)
            if outcome.result is not None:
                data["result"] = json.loads(outcome.result)
            if outcome.event in ("waiting", "snoozed", "resumed") and outcome.event_data:
                data.update(json.loads(outcome.event_data))
            engine.emit(outcome.event, job.id, job.name, job.tenant, attempt, data)
        if log.isEnabledFor(logging.INFO):
            _log_outcome(r, outcome)
        if outcome.remove and outcome.state in (JobState.COMPLETED, JobState.FAILED):
            # remove_on_complete, or remove_on_fail on a final failure
            engine.emit("removed", job.id, job.name, job.tenant, attempt)


def _log_outcome(r: Running, outcome: Outcome) -> None:
    """One INFO line for a recorded outcome: the job's name, id, attempt and duration;
    on a failure the error, with its traceback when the handler raised one. Structured
    fields ride along as ``extra`` (``job_id``, ``job_name``, ``attempt``, ``duration``,
    ``event``, and ``error`` / ``retry_in``)."""
    job = r.job
    fields: dict[str, Any] = {
        "event": outcome.event,
        "job_id": job.id,
        "job_name": job.name,
        "attempt": job.attempts,
        "duration": round(r.elapsed, 6),
    }
    head = "job %s #%s attempt %d/%d"
    args: list[Any] = [job.name, job.id, job.attempts, job.max_attempts]
    took = f"{r.elapsed * 1000:.1f}ms" if r.elapsed < 1 else f"{r.elapsed:.2f}s"
    if outcome.event in ("waiting", "snoozed") and outcome.run_at is not None:
        fields["resume_in"] = wait = round(max(0.0, outcome.run_at - outcome.at), 3)
        what = "waiting for a token" if outcome.wait_token else f"{outcome.event} for {wait:g}s"
        log.info(head + " %s after %s", *args, what, took, extra=fields)
        return
    if outcome.refund_attempt:  # drained: back to queued, the attempt not used up
        log.info(head + " requeued after %s (worker stopping)", *args, took, extra=fields)
        return
    if outcome.error is None:  # completed, cancelled
        log.info(head + " %s in %s", *args, outcome.event, took, extra=fields)
        return
    record = json.loads(outcome.error)
    fields["error"] = error = f"{record.get('type')}: {record.get('message')}"
    exc_info = r.error  # None when nothing was raised (a timeout, no handler)
    if outcome.event == "retrying" and outcome.run_at is not None:
        fields["retry_in"] = delay = round(max(0.0, outcome.run_at - outcome.at), 3)
        msg = head + " failed in %s, retrying in %.1fs: %s"
        log.info(msg, *args, took, delay, error, exc_info=exc_info, extra=fields)
    else:  # failed, orphaned
        msg = head + " %s in %s: %s"
        log.info(msg, *args, outcome.event, took, error, exc_info=exc_info, extra=fields)

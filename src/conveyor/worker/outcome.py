"""Classify how an attempt ended into the transition to store (pure, unit-tested)."""

from __future__ import annotations

import json
import traceback as tb
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor._json import clean_text
from conveyor.backends.base import ClaimedJob, Outcome
from conveyor.context import Suspend
from conveyor.models import JobState
from conveyor.retry import Backoff, Fatal, Retry, Snooze

__all__ = ["RunResult", "classify", "error_record", "removes_on_fail"]


@dataclass(frozen=True, slots=True)
class RunResult:
    """How the handler ended.

    status: ``ok`` | ``error`` | ``timeout`` | ``cancelled`` | ``drained`` | ``orphaned``
    | ``snoozed`` (``exc`` is the :class:`~conveyor.Snooze`) | ``suspended`` (``exc`` is
    the context's :class:`~conveyor.context.Suspend`)
    """

    status: str
    result: str | None = None  # JSON text for ok
    exc: BaseException | None = None
    message: str | None = None  # for errors without an exception object


def error_record(
    attempt: int,
    exc: BaseException | None,
    at: float,
    *,
    type_: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """One entry of ``job.errors``."""
    if exc is not None:
        trace: str | None = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        type_ = type_ or type(exc).__name__
        message = message or str(exc)
    else:
        trace = None
    return {  # text a handler made may hold lone surrogates: stored visibly replaced
        "attempt": attempt,
        "type": clean_text(type_ or "Error"),
        "message": clean_text(message or ""),
        "traceback": clean_text(trace) if trace is not None else None,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
    }


def removes_on_fail(options: str | None) -> bool:
    """Whether a job whose stored options (JSON text) are ``options`` is deleted when it
    finally fails (``remove_on_fail``, see ``validation.JobBuilder``). Options that cannot
    be decoded keep the job: its row is then the only trace of what went wrong."""
    if not options or '"remove_on_fail"' not in options:
        return False  # the common case, without decoding
    try:
        decoded = json.loads(options)
    except ValueError:
        return False
    return isinstance(decoded, dict) and decoded.get("remove_on_fail") is True


def classify(job: ClaimedJob, run: RunResult, now: float, backoff: Backoff) -> Outcome:
    """The transition for a finished attempt: completed, retry at T, failed, cancelled,
    snoozed or waiting (neither uses up the attempt), or back to queued (drained without
    using up the attempt)."""

    def out(state: JobState, event: str, **kw: Any) -> Outcome:
        return Outcome(
            job_id=job.id, token=job.token, at=now, state=state, event=event,
            attempt=job.attempts, **kw,
        )  # fmt: skip

    if run.status == "ok":
        return out(
            JobState.COMPLETED, "completed", result=run.result, remove=job.remove_on_complete
        )
    if run.status == "cancelled":
        return out(JobState.CANCELLED, "cancelled")
    if run.status == "snoozed" and isinstance(run.exc, Snooze):
        # River's JobSnooze: run again after the delay; the attempt is given back.
        run_at = now + run.exc.delay
        state = JobState.SCHEDULED if run.exc.delay > 0 else JobState.QUEUED
        data = json.dumps({"delay": run.exc.delay, "run_at": run_at})
        return out(state, "snoozed", run_at=run_at, refund_attempt=True, event_data=data)
    if run.status == "suspended" and isinstance(run.exc, Suspend):
        # A durable wait: no slot, no lease; the job runs again from the top when the
        # wait is over, so this run uses up no attempt.
        wait = run.exc
        return out(JobState.WAITING, "waiting", run_at=wait.until, refund_attempt=True,
                   wait_token=wait.token, event_data=json.dumps(wait.data))  # fmt: skip
    if run.status == "drained":
        data = json.dumps({"reason": "worker stopping"})
        return out(JobState.QUEUED, "retrying", run_at=now, refund_attempt=True, event_data=data)
    if run.status == "timeout":
        record = error_record(
            job.attempts,
            None,
            now,
            type_="TimeoutError",
            message=run.message or "the job ran past its timeout",
        )
    elif run.status == "orphaned":
        record = error_record(job.attempts, None, now, type_="UnknownJob", message=run.message)
        remove = removes_on_fail(job.options)
        return out(JobState.FAILED, "orphaned", error=json.dumps(record), remove=remove)
    else:
        record = error_record(job.attempts, run.exc, now, message=run.message)
    retryable = not isinstance(run.exc, Fatal)
    # A run whose worker died (a stall) is not the job's fault: max_attempts and the
    # backoff count only the runs that did not stall (job.attempts counts every run).
    counted = job.attempts - job.stalls
    if retryable and counted < job.max_attempts:
        delay = run.exc.delay if isinstance(run.exc, Retry) and run.exc.delay is not None else None
        if delay is None:
            delay = backoff.delay(counted)
        run_at = now + delay
        data = json.dumps({"retry_at": run_at, "delay": delay})
        state = JobState.SCHEDULED if delay > 0 else JobState.QUEUED
        return out(state, "retrying", run_at=run_at, error=json.dumps(record), event_data=data)
    return out(
        JobState.FAILED, "failed", error=json.dumps(record), remove=removes_on_fail(job.options)
    )

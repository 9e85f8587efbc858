"""Classify how an attempt ended into the transition to store (pure, unit-tested)."""

from __future__ import annotations

import json
import traceback as tb
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from conveyor.backends.base import ClaimedJob, Outcome
from conveyor.models import JobState
from conveyor.retry import Backoff, Fatal, Retry

__all__ = ["RunResult", "classify", "error_record"]


@dataclass(frozen=True, slots=True)
class RunResult:
    """How the handler ended.

    status: ``ok`` | ``error`` | ``timeout`` | ``cancelled`` | ``drained`` | ``orphaned``
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
        trace = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        type_ = type_ or type(exc).__name__
        message = message or str(exc)
    else:
        trace = None
    return {
        "attempt": attempt,
        "type": type_ or "Error",
        "message": message or "",
        "traceback": trace,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
    }


def classify(job: ClaimedJob, run: RunResult, now: float, backoff: Backoff) -> Outcome:
    """The transition for a finished attempt: completed, retry at T, failed, cancelled,
    or back to queued (drained without using up the attempt)."""

    def out(state: JobState, event: str, **kw: Any) -> Outcome:
        return Outcome(job_id=job.id, token=job.token, at=now, state=state, event=event, **kw)

    if run.status == "ok":
        return out(
            JobState.COMPLETED, "completed", result=run.result, remove=job.remove_on_complete
        )
    if run.status == "cancelled":
        return out(JobState.CANCELLED, "cancelled")
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
        return out(JobState.FAILED, "orphaned", error=json.dumps(record))
    else:
        record = error_record(job.attempts, run.exc, now, message=run.message)
    retryable = not isinstance(run.exc, Fatal)
    if retryable and job.attempts < job.max_attempts:
        delay = run.exc.delay if isinstance(run.exc, Retry) and run.exc.delay is not None else None
        if delay is None:
            delay = backoff.delay(job.attempts)
        run_at = now + delay
        data = json.dumps({"retry_at": run_at, "delay": delay})
        state = JobState.SCHEDULED if delay > 0 else JobState.QUEUED
        return out(state, "retrying", run_at=run_at, error=json.dumps(record), event_data=data)
    return out(JobState.FAILED, "failed", error=json.dumps(record))

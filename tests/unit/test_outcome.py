"""conveyor.worker.outcome.classify: every branch of how an attempt ends (pure)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.backends.base import ClaimedJob
from conveyor.models import JobState
from conveyor.retry import Backoff, Fatal, Retry
from conveyor.worker.outcome import RunResult, classify, error_record

NOW = 1_900_000_000.0
FIXED = Backoff.fixed(10)


def job(
    attempts: int = 1, max_attempts: int = 3, remove: bool = False, stalls: int = 0
) -> ClaimedJob:
    return ClaimedJob(
        id=42,
        name="j",
        payload="{}",
        attempts=attempts,
        max_attempts=max_attempts,
        channel="default",
        priority=0,
        tenant="t",
        group=None,
        tags=(),
        options=None,
        run_at=NOW - 5,
        created_at=NOW - 5,
        token="tok",
        remove_on_complete=remove,
        stalls=stalls,
        max_stalls=1,
    )


def raised(exc: BaseException) -> BaseException:
    """The exception with a traceback, as a handler would have raised it."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def error_of(outcome: Any) -> dict[str, Any]:
    assert outcome.error is not None
    return json.loads(outcome.error)


@pytest.mark.parametrize("remove", [False, True])
def test_ok_completes_with_the_result(remove: bool) -> None:
    o = classify(job(remove=remove), RunResult("ok", result='{"a":1}'), NOW, FIXED)
    assert (o.job_id, o.token, o.at) == (42, "tok", NOW)
    assert o.state is JobState.COMPLETED and o.event == "completed"
    assert o.result == '{"a":1}'
    assert o.remove is remove
    assert o.error is None and o.refund_attempt is False and o.expired_before is None


def test_cancelled() -> None:
    o = classify(job(), RunResult("cancelled"), NOW, FIXED)
    assert o.state is JobState.CANCELLED and o.event == "cancelled"
    assert o.error is None and o.result is None and o.refund_attempt is False


@pytest.mark.parametrize("attempts", [1, 3])
def test_drained_goes_back_to_queued_and_refunds_the_attempt(attempts: int) -> None:
    o = classify(job(attempts=attempts, max_attempts=3), RunResult("drained"), NOW, FIXED)
    assert o.state is JobState.QUEUED and o.event == "retrying"
    assert o.run_at == NOW
    assert o.refund_attempt is True
    assert o.error is None
    assert o.event_data is not None and json.loads(o.event_data)["reason"]


def test_orphaned_fails_at_once_even_with_attempts_left() -> None:
    o = classify(
        job(attempts=1, max_attempts=5),
        RunResult("orphaned", message="no handler for 'j'"),
        NOW,
        FIXED,
    )
    assert o.state is JobState.FAILED and o.event == "orphaned"
    err = error_of(o)
    assert (
        err["type"] == "UnknownJob"
        and err["message"] == "no handler for 'j'"
        and err["attempt"] == 1
    )


def test_timeout_with_attempts_left_is_retried_after_the_backoff() -> None:
    o = classify(job(attempts=1), RunResult("timeout"), NOW, FIXED)
    assert o.state is JobState.SCHEDULED and o.event == "retrying"
    assert o.run_at == NOW + 10
    err = error_of(o)
    assert err["type"] == "TimeoutError" and err["message"] and err["traceback"] is None
    assert json.loads(o.event_data or "{}") == {"retry_at": NOW + 10, "delay": 10}


def test_timeout_message_is_kept() -> None:
    o = classify(job(attempts=3), RunResult("timeout", message="killed the child"), NOW, FIXED)
    assert o.state is JobState.FAILED and o.event == "failed"
    assert error_of(o)["message"] == "killed the child"


def test_error_with_attempts_left_retries() -> None:
    exc = raised(ValueError("boom"))
    o = classify(job(attempts=2, max_attempts=3), RunResult("error", exc=exc), NOW, FIXED)
    assert o.state is JobState.SCHEDULED and o.event == "retrying" and o.run_at == NOW + 10
    err = error_of(o)
    assert err["attempt"] == 2 and err["type"] == "ValueError" and err["message"] == "boom"
    assert "ValueError: boom" in err["traceback"] and "raised" in err["traceback"]
    assert datetime.fromisoformat(err["at"]) == datetime.fromtimestamp(NOW, UTC)


def test_error_on_the_last_attempt_fails() -> None:
    o = classify(
        job(attempts=3, max_attempts=3), RunResult("error", exc=raised(KeyError("k"))), NOW, FIXED
    )
    assert o.state is JobState.FAILED and o.event == "failed" and o.run_at is None
    assert error_of(o)["type"] == "KeyError"


def test_zero_delay_retry_is_queued_not_scheduled() -> None:
    o = classify(job(), RunResult("error", exc=raised(ValueError())), NOW, Backoff.fixed(0))
    assert o.state is JobState.QUEUED and o.run_at == NOW and o.event == "retrying"


def test_backoff_is_given_the_attempt_number() -> None:
    o = classify(job(attempts=3, max_attempts=9), RunResult("error", exc=raised(ValueError())), NOW,
                 Backoff.exponential(2))  # fmt: skip
    assert o.run_at == NOW + 8


def test_runs_that_stalled_use_up_no_attempt() -> None:
    """Run 3 of an attempts=2 job whose first run stalled is its second counted attempt:
    a failure there is final; run 2 (its first) is retried."""
    failure = RunResult("error", exc=raised(ValueError()))
    first = classify(job(attempts=2, max_attempts=2, stalls=1), failure, NOW, FIXED)
    assert first.state is JobState.SCHEDULED and first.event == "retrying"
    assert error_of(first)["attempt"] == 2  # the run's number: runs started
    last = classify(job(attempts=3, max_attempts=2, stalls=1), failure, NOW, FIXED)
    assert last.state is JobState.FAILED and last.event == "failed"
    assert not first.stall and not last.stall  # only a rescue counts a stall


def test_the_backoff_counts_only_runs_that_did_not_stall() -> None:
    o = classify(job(attempts=5, max_attempts=9, stalls=2), RunResult("error", exc=raised(ValueError())),
                 NOW, Backoff.exponential(2))  # fmt: skip
    assert o.run_at == NOW + 8  # failed counted attempt 3: 2 x 2^2


def test_retry_with_delay_overrides_the_backoff() -> None:
    o = classify(job(), RunResult("error", exc=raised(Retry(delay=3))), NOW, FIXED)
    assert o.state is JobState.SCHEDULED and o.run_at == NOW + 3
    assert error_of(o)["type"] == "Retry"


def test_retry_without_delay_uses_the_backoff() -> None:
    o = classify(job(), RunResult("error", exc=raised(Retry())), NOW, FIXED)
    assert o.run_at == NOW + 10


def test_retry_zero_delay_is_queued() -> None:
    o = classify(job(), RunResult("error", exc=raised(Retry(delay=0))), NOW, FIXED)
    assert o.state is JobState.QUEUED and o.run_at == NOW


def test_retry_without_attempts_left_fails() -> None:
    o = classify(
        job(attempts=3, max_attempts=3), RunResult("error", exc=raised(Retry(delay=1))), NOW, FIXED
    )
    assert o.state is JobState.FAILED and o.event == "failed"


def test_fatal_fails_with_attempts_left() -> None:
    o = classify(
        job(attempts=1, max_attempts=10), RunResult("error", exc=raised(Fatal("nope"))), NOW, FIXED
    )
    assert o.state is JobState.FAILED and o.event == "failed"
    err = error_of(o)
    assert err["type"] == "Fatal" and err["message"] == "nope"


@pytest.mark.parametrize(
    "exc",
    [SystemExit(2), KeyboardInterrupt(), asyncio.CancelledError(), GeneratorExit()],
    ids=lambda e: type(e).__name__,
)
def test_base_exceptions_are_ordinary_failed_attempts(exc: BaseException) -> None:
    o = classify(job(attempts=1, max_attempts=2), RunResult("error", exc=raised(exc)), NOW, FIXED)
    assert o.state is JobState.SCHEDULED and o.event == "retrying"
    assert error_of(o)["type"] == type(exc).__name__


def test_error_without_an_exception_object() -> None:
    o = classify(
        job(attempts=3, max_attempts=3), RunResult("error", message="child died"), NOW, FIXED
    )
    err = error_of(o)
    assert o.state is JobState.FAILED
    assert err["message"] == "child died" and err["traceback"] is None and err["type"]


def test_error_record_message_override_and_defaults() -> None:
    rec = error_record(4, raised(ValueError("orig")), NOW, message="clearer")
    assert rec["attempt"] == 4 and rec["type"] == "ValueError" and rec["message"] == "clearer"
    rec = error_record(1, None, NOW)
    assert rec == {"attempt": 1, "type": "Error", "message": "", "traceback": None,
                   "at": datetime.fromtimestamp(NOW, UTC).isoformat()}  # fmt: skip
    rec = error_record(1, raised(ValueError("m")), NOW, type_="Custom")
    assert rec["type"] == "Custom"
    json.dumps(rec)  # JSON-safe


def _removing(j: ClaimedJob, options: str | None = '{"remove_on_fail": true}') -> ClaimedJob:
    j.options = options
    return j


@pytest.mark.parametrize(
    ("j", "run"),
    [
        (job(attempts=3, max_attempts=3), RunResult("error", exc=raised(ValueError("x")))),
        (job(attempts=1, max_attempts=3), RunResult("error", exc=raised(Fatal("stop")))),
        (job(attempts=3, max_attempts=3), RunResult("timeout")),
        (job(attempts=1, max_attempts=3), RunResult("orphaned", message="no handler")),
    ],
    ids=["last-attempt", "fatal", "timeout", "orphaned"],
)
def test_remove_on_fail_removes_on_every_final_failure(j: ClaimedJob, run: RunResult) -> None:
    assert classify(j, run, NOW, FIXED).remove is False  # kept without the option
    o = classify(_removing(j), run, NOW, FIXED)
    assert o.state is JobState.FAILED and o.remove is True


def test_remove_on_fail_keeps_a_retry_a_success_and_a_cancel() -> None:
    error = RunResult("error", exc=raised(ValueError("x")))
    retry = classify(_removing(job(attempts=1, max_attempts=3)), error, NOW, FIXED)
    assert retry.state is JobState.SCHEDULED and retry.remove is False
    for status in ("ok", "cancelled", "drained"):
        assert classify(_removing(job()), RunResult(status), NOW, FIXED).remove is False


@pytest.mark.parametrize(
    "options",
    [None, "{}", '{"remove_on_fail": false}', '{"remove_on_fail": 1}', '{"remove_on_fail": true'],
)
def test_remove_on_fail_needs_the_option_set_to_true(options: str | None) -> None:
    error = RunResult("error", exc=raised(Fatal("stop")))
    assert classify(_removing(job(), options), error, NOW, FIXED).remove is False

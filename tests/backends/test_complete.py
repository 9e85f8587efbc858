"""complete_many and complete_and_claim: fenced transitions decided by the core."""

from __future__ import annotations

import json
import uuid

import pytest

from conveyor.backends.base import Backend, ClaimLimit, EnqueueParams, ProgressUpdate
from conveyor.models import Job, JobState
from tests.backends.helpers import (
    NOW,
    claim,
    claim_ids,
    claim_params,
    elapsed,
    enqueue,
    error,
    event_types,
    finish,
    get,
    new_job,
    outcome,
    quiet,
    ts,
)


async def running(backend: Backend, token: str = "tok", **kw: object) -> int:
    """Enqueue one job and claim just it under ``token``; its id."""
    name = f"run-{uuid.uuid4().hex[:8]}"
    [job_id] = await enqueue(backend, new_job(name, **kw))
    assert await claim_ids(backend, token=token, include=(name,)) == [job_id]
    return job_id


async def snapshot(backend: Backend, job_id: int) -> tuple[Job, list[str]]:
    return await get(backend, job_id), await event_types(backend, job_id)


async def test_completed_stores_result_finish_time_and_event(backend: Backend) -> None:
    job_id = await running(backend)
    applied = await backend.complete_many(
        [outcome(job_id, result='{"sent": true}', at=NOW + 3, event_data='{"ms": 5}')]
    )
    assert applied == [True]
    job = await get(backend, job_id)
    assert (job.state, job.result, ts(job.finished_at), job.attempts) == (
        "completed",
        {"sent": True},
        NOW + 3,
        1,
    )
    [done] = [e for e in await backend.get_events(job_id) if e.type == "completed"]
    assert (done.attempt, ts(done.at), dict(done.data)) == (1, NOW + 3, {"ms": 5})
    assert await backend.expired_leases(NOW + 10_000, 10) == []  # no lease left


async def test_an_empty_batch_applies_nothing(backend: Backend) -> None:
    assert await backend.complete_many([]) == []


async def test_a_wrong_token_changes_nothing(backend: Backend) -> None:
    job_id = await running(backend, token="mine")
    before = await snapshot(backend, job_id)
    assert await backend.complete_many(
        [outcome(job_id, token="stale", result='{"x": 1}', error=error())]
    ) == [False]
    assert await snapshot(backend, job_id) == before
    assert (before[0].state, before[0].result, before[0].errors) == ("running", None, ())


async def test_a_job_that_is_not_running_changes_nothing(backend: Backend) -> None:
    [queued] = await enqueue(backend, new_job())
    before = await snapshot(backend, queued)
    assert await backend.complete_many([outcome(queued, token="tok")]) == [False]
    assert await snapshot(backend, queued) == before

    done = await running(backend, token="t")
    await finish(backend, done, "t", result='"first"')
    before = await snapshot(backend, done)
    assert await backend.complete_many([outcome(done, "t", result='"second"')]) == [False]
    assert await snapshot(backend, done) == before
    assert before[0].result == "first"

    assert await backend.complete_many([outcome(999_999, "t")]) == [False]


async def test_results_come_back_per_outcome_in_order(backend: Backend) -> None:
    a, b, c = await enqueue(backend, new_job("a"), new_job("b"), new_job("c"))
    await claim(backend, token="t")
    applied = await backend.complete_many(
        [outcome(a, "t"), outcome(b, "wrong"), outcome(c, "t", state=JobState.FAILED)]
    )
    assert applied == [True, False, True]
    assert [(await get(backend, i)).state for i in (a, b, c)] == ["completed", "running", "failed"]


async def test_expired_before_applies_only_to_an_expired_lease(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())
    await claim(backend, token="t", lease=30)  # lease_expires_at = NOW + 30
    rescue = {"state": JobState.QUEUED, "run_at": NOW + 31, "at": NOW + 31, "event": "stalled"}
    assert await backend.complete_many(
        [outcome(job_id, "t", expired_before=NOW + 29.5, **rescue)]
    ) == [False]
    assert (await get(backend, job_id)).state == "running"
    assert await backend.complete_many(
        [outcome(job_id, "wrong", expired_before=NOW + 31, **rescue)]
    ) == [False]
    assert await backend.complete_many(
        [outcome(job_id, "t", expired_before=NOW + 30, **rescue)]  # lease_expires_at <= it
    ) == [True]
    job = await get(backend, job_id)
    assert (job.state, ts(job.run_at), job.attempts) == ("queued", NOW + 31, 1)
    assert "stalled" in await event_types(backend, job_id)
    # the late worker's completion is fenced out: the rescue stands
    assert await backend.complete_many([outcome(job_id, "t")]) == [False]
    assert (await get(backend, job_id)).state == "queued"


async def test_failed_appends_the_error(backend: Backend) -> None:
    job_id = await running(backend)
    await finish(
        backend,
        job_id,
        state=JobState.QUEUED,
        run_at=NOW + 2,
        error=error("first", attempt=1),
        event="retrying",
    )
    job = await get(backend, job_id)
    assert (job.state, ts(job.run_at), job.finished_at) == ("queued", NOW + 2, None)
    assert [e["message"] for e in job.errors] == ["first"]
    [again] = await claim(backend, token="t2", now=NOW + 2)
    assert again.attempts == 2
    await finish(
        backend, job_id, "t2", state=JobState.FAILED, at=NOW + 3, error=error("second", 2, NOW + 3)
    )
    job = await get(backend, job_id)
    assert (job.state, ts(job.finished_at), job.attempts) == ("failed", NOW + 3, 2)
    assert list(job.errors) == [json.loads(error("first")), json.loads(error("second", 2, NOW + 3))]
    assert job.last_error == json.loads(error("second", 2, NOW + 3))


async def test_scheduled_waits_for_its_run_at(backend: Backend) -> None:
    job_id = await running(backend)
    await finish(backend, job_id, state=JobState.SCHEDULED, run_at=NOW + 60, event="retrying")
    job = await get(backend, job_id)
    assert (job.state, ts(job.run_at)) == ("scheduled", NOW + 60)
    assert await claim_ids(backend, now=NOW + 100) == []  # scheduled: promote_due first


async def test_cancelled_and_waiting(backend: Backend) -> None:
    cancelled = await running(backend, token="a")
    await finish(backend, cancelled, "a", state=JobState.CANCELLED, at=NOW + 1)
    job = await get(backend, cancelled)
    assert (job.state, ts(job.finished_at)) == ("cancelled", NOW + 1)

    waiting = await running(backend, token="b")
    await finish(backend, waiting, "b", state=JobState.WAITING, run_at=NOW + 500, event="waiting")
    job = await get(backend, waiting)
    assert (job.state, job.finished_at) == ("waiting", None)
    assert await claim_ids(backend, now=NOW + 1000) == []  # a waiting job is not claimable
    assert (await backend.counts(None))["waiting"] == 1


async def test_refund_attempt_gives_the_attempt_back(backend: Backend) -> None:
    job_id = await running(backend)
    await finish(
        backend, job_id, state=JobState.QUEUED, run_at=NOW, refund_attempt=True, event="retrying"
    )
    job = await get(backend, job_id)
    assert (job.state, job.attempts, job.errors) == ("queued", 0, ())
    [again] = await claim(backend, token="t2")
    assert again.attempts == 1


async def test_back_to_queued_or_scheduled_starts_progress_again(backend: Backend) -> None:
    """Issue #13: a job sent back to run again (a drained requeue, a retry, a rescue)
    starts from 0 %; waiting and failed keep the progress they reached."""
    ends = {
        "drained": {"state": JobState.QUEUED, "run_at": NOW, "refund_attempt": True},
        "retry": {"state": JobState.SCHEDULED, "run_at": NOW + 60, "error": error()},
        "rescue": {"state": JobState.QUEUED, "run_at": NOW + 31, "at": NOW + 31,
                   "expired_before": NOW + 31, "stall": True},
        "waiting": {"state": JobState.WAITING, "run_at": NOW + 60},
        "failed": {"state": JobState.FAILED, "error": error()},
    }  # fmt: skip
    for token, kw in ends.items():
        job_id = await running(backend, token=token)
        assert await backend.set_progress(ProgressUpdate(job_id, token, 99, NOW + 1))
        await finish(backend, job_id, token, event="retrying", **kw)
        job = await get(backend, job_id)
        expected = 99 if token in ("waiting", "failed") else 0
        assert (job.state, job.progress) == (kw["state"], expected), token


async def test_stall_counts_a_stall_with_the_rescue(backend: Backend) -> None:
    """A rescue (stall=True) adds one to stalls and leaves attempts (runs started) as they
    are, in the same fenced transition: fenced out, it adds nothing."""
    job_id = await running(backend, token="dead")  # lease_expires_at = NOW + 30
    rescue = {"run_at": NOW + 31, "at": NOW + 31, "expired_before": NOW + 31, "stall": True}
    stale = outcome(job_id, "other", state=JobState.QUEUED, event="stalled", **rescue)
    assert await backend.complete_many([stale]) == [False]
    assert (await get(backend, job_id)).stalls == 0
    await finish(backend, job_id, "dead", state=JobState.QUEUED, event="stalled", **rescue)
    job = await get(backend, job_id)
    assert (job.state, job.attempts, job.stalls) == ("queued", 1, 1)
    # a second run, rescued too, and this time failed for good: still counted
    [again] = await claim(backend, token="dead-2", now=NOW + 31)
    assert (again.attempts, again.stalls) == (2, 1)
    rescue = {**rescue, "at": NOW + 62, "expired_before": NOW + 62, "run_at": NOW + 62}
    await finish(
        backend, job_id, "dead-2", state=JobState.FAILED, event="stalled",
        error=error("stalled twice", attempt=2), **rescue,
    )  # fmt: skip
    job = await get(backend, job_id)
    assert (job.state, job.attempts, job.stalls) == ("failed", 2, 2)
    assert ts(job.finished_at) == NOW + 62
    # and an ordinary outcome never counts one
    other = await running(backend, token="live")
    await finish(backend, other, "live", state=JobState.QUEUED, run_at=NOW, event="retrying")
    assert (await get(backend, other)).stalls == 0


async def test_remove_deletes_the_row(backend: Backend) -> None:
    job_id = await running(backend, idempotency_key="k", remove_on_complete=True)
    assert await backend.complete_many(
        [outcome(job_id, result='"r"', remove=True, event="removed")]
    ) == [True]
    assert await backend.get_job(job_id) is None
    assert sum((await backend.counts(None)).values()) == 0
    # the key went with the job: the same key makes a new one
    [again] = await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW))
    assert again.created and again.id != job_id


async def test_remove_is_fenced_too(backend: Backend) -> None:
    job_id = await running(backend, token="mine")
    assert await backend.complete_many([outcome(job_id, "stale", remove=True)]) == [False]
    assert (await get(backend, job_id)).state == "running"


# -- complete_and_claim -------------------------------------------------------------------


async def test_complete_and_claim_does_both(backend: Backend) -> None:
    a, b, c = await enqueue(backend, new_job("a"), new_job("b"), new_job("c"))
    assert await claim_ids(backend, token="t1", limit=1) == [a]
    applied, jobs = await backend.complete_and_claim(
        [outcome(a, "t1", result='"ok"'), outcome(c, "t1")],
        claim_params(token="t2", limit=1, now=NOW + 1),
    )
    assert applied == [True, False]  # c was never claimed under t1
    assert [(j.id, j.token, j.attempts) for j in jobs] == [(b, "t2", 1)]
    assert (await get(backend, a)).state == "completed"
    job_b = await get(backend, b)
    assert (job_b.state, ts(job_b.started_at)) == ("running", NOW + 1)
    assert "started" in await event_types(backend, b)


async def test_complete_and_claim_with_nothing_to_complete_or_claim(backend: Backend) -> None:
    assert await backend.complete_and_claim([], claim_params()) == ([], [])
    [a] = await enqueue(backend, new_job())
    applied, jobs = await backend.complete_and_claim([], claim_params())
    assert (applied, [j.id for j in jobs]) == ([], [a])


async def _next_wait_returns_at_once(backend: Backend) -> bool:
    _, took = await elapsed(backend.wait_for_work(30))
    return took < 5


async def test_a_freed_group_is_claimed_or_announced(backend: Backend) -> None:
    g1, g2 = await enqueue(backend, new_job(group="g"), new_job(group="g"))
    assert await claim_ids(backend, token="t1") == [g1]
    await quiet(backend)
    applied, jobs = await backend.complete_and_claim([outcome(g1, "t1")], claim_params("t2"))
    assert applied == [True]
    assert [j.id for j in jobs] in ([g2], [])
    if not jobs:  # the claim did not see the freed group: the next wait must not sleep
        assert await _next_wait_returns_at_once(backend)
        assert await claim_ids(backend, token="t3") == [g2]


async def test_a_requeued_job_is_claimed_or_announced(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())
    await claim(backend, token="t1")
    await quiet(backend)
    applied, jobs = await backend.complete_and_claim(
        [outcome(job_id, "t1", state=JobState.QUEUED, run_at=NOW, event="retrying")],
        claim_params("t2"),
    )
    assert applied == [True]
    assert [(j.id, j.attempts) for j in jobs] in ([(job_id, 2)], [])
    if not jobs:
        assert await _next_wait_returns_at_once(backend)
        assert [j.attempts for j in await claim(backend, token="t3")] == [2]


async def test_work_the_claim_could_not_take_is_announced(backend: Backend) -> None:
    """The combined claim looks elsewhere (its filters): what the outcomes requeued or
    freed must still end this process's next wait at once."""
    g1, g2, retried = await enqueue(
        backend, new_job("g", group="g"), new_job("g", group="g"), new_job("r")
    )
    assert sorted(await claim_ids(backend, token="t1")) == [g1, retried]
    elsewhere = claim_params("t2", channels=("elsewhere",))

    await quiet(backend)
    applied, jobs = await backend.complete_and_claim([outcome(g1, "t1")], elsewhere)
    assert (applied, jobs) == ([True], [])
    assert await _next_wait_returns_at_once(backend), "a freed group was not announced"

    await quiet(backend)
    applied, jobs = await backend.complete_and_claim(
        [outcome(retried, "t1", state=JobState.QUEUED, run_at=NOW, event="retrying")], elsewhere
    )
    assert (applied, jobs) == ([True], [])
    assert await _next_wait_returns_at_once(backend), "a requeued job was not announced"
    assert sorted(await claim_ids(backend, token="t3")) == sorted([g2, retried])


async def test_a_failed_complete_and_claim_applies_nothing(backend: Backend) -> None:
    a, b = await enqueue(backend, new_job("a"), new_job("b"))
    assert await claim_ids(backend, token="t1", limit=1) == [a]
    bad_claim = claim_params(token=object())  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017, PT011 - the contract names no error type
        await backend.complete_and_claim([outcome(a, "t1")], bad_claim)
    assert (await get(backend, a)).state == "running"  # the completion was not applied
    assert (await get(backend, b)).state == "queued"
    assert await backend.complete_many([outcome(a, "t1")]) == [True]


@pytest.mark.parametrize(
    ("state", "event"),
    [(JobState.QUEUED, "retrying"), (JobState.SCHEDULED, "retrying"), (JobState.QUEUED, "snoozed")],
)
async def test_a_cancel_requested_while_running_wins_over_running_again(
    backend: Backend, state: JobState, event: str
) -> None:
    """A retry or a snooze of a job whose cancel was requested (too late for the worker to
    stop the handler) is stored as cancelled: the cancel is never lost."""
    job_id = await running(backend)
    assert (await backend.cancel(job_id, NOW)).value == "requested"
    retry = outcome(job_id, state=state, event=event, run_at=NOW + 60, error=error("late"))
    assert await backend.complete_many([retry]) == [True]
    job, events = await snapshot(backend, job_id)
    assert (job.state, ts(job.finished_at)) == ("cancelled", NOW)
    assert events[-1] == "cancelled" and event not in events
    assert [e["message"] for e in job.errors] == ["late"]  # why the attempt ended: kept
    assert (retry.state, retry.event, retry.event_data) == ("cancelled", "cancelled", None)
    assert await claim_ids(backend, now=NOW + 120, token="t2") == []


async def test_a_cancel_requested_too_late_leaves_a_finished_job_as_it_ended(
    backend: Backend,
) -> None:
    job_id = await running(backend)
    assert (await backend.cancel(job_id, NOW)).value == "requested"
    done = outcome(job_id, result='"ok"')
    assert await backend.complete_many([done]) == [True]
    assert (await get(backend, job_id)).state == "completed"
    assert (done.state, done.event) == ("completed", "completed")


async def test_a_cancel_request_is_honoured_through_complete_and_claim(backend: Backend) -> None:
    job_id = await running(backend)
    assert (await backend.cancel(job_id, NOW)).value == "requested"
    retry = outcome(job_id, state=JobState.QUEUED, event="retrying", run_at=NOW)
    applied, jobs = await backend.complete_and_claim([retry], claim_params(token="t2"))
    assert applied == [True] and job_id not in [j.id for j in jobs]
    assert (await get(backend, job_id)).state == "cancelled"
    assert retry.state == "cancelled"


async def test_a_cancel_request_is_honoured_through_a_limited_complete_and_claim(
    backend: Backend,
) -> None:
    job_id = await running(backend)
    assert (await backend.cancel(job_id, NOW)).value == "requested"
    retry = outcome(job_id, state=JobState.QUEUED, event="retrying", run_at=NOW)
    limits = (ClaimLimit("name", "other", None, 5),)
    applied, _ = await backend.complete_and_claim([retry], claim_params(token="t2", limits=limits))
    assert applied == [True]
    assert (await get(backend, job_id)).state == "cancelled"
    assert (retry.state, retry.event) == ("cancelled", "cancelled")

"""Management: cancel (every CancelOutcome), cancel_jobs, retry (every RetryOutcome),
set_paused (the every-channel contract)."""

from __future__ import annotations

from conveyor.backends.base import (
    Backend,
    CancelOutcome,
    JobFilter,
    RetryOutcome,
    RetryResult,
)
from conveyor.models import TERMINAL_STATES, UPCOMING_STATES, JobState
from tests.backends.helpers import (
    NOW,
    claim,
    claim_ids,
    enqueue,
    error,
    event_types,
    finish,
    get,
    new_job,
    one_in_each_state,
    ts,
)

# -- cancel -------------------------------------------------------------------------------


async def test_cancel_an_upcoming_job(backend: Backend) -> None:
    ids = await one_in_each_state(backend)
    for state in UPCOMING_STATES:
        job_id = ids[state]
        outcome = await backend.cancel(job_id, NOW + 7)
        assert outcome is CancelOutcome.CANCELLED, (state, outcome)
        job = await get(backend, job_id)
        assert (job.state, ts(job.finished_at)) == ("cancelled", NOW + 7), state
    assert await claim_ids(backend, now=NOW + 10_000) == []  # nothing left to claim


async def test_cancel_a_running_job_requests_it(backend: Backend) -> None:
    ids = await one_in_each_state(backend)
    job_id = ids[JobState.RUNNING]
    assert await backend.cancel(job_id, NOW) is CancelOutcome.REQUESTED
    job = await get(backend, job_id)
    assert (job.state, job.finished_at) == ("running", None)  # its worker ends it
    assert await backend.cancel_requests([job_id]) == frozenset({job_id})
    assert await backend.cancel(job_id, NOW + 1) is CancelOutcome.REQUESTED  # asked again
    await finish(backend, job_id, "t-running", state=JobState.CANCELLED, event="cancelled")
    assert await backend.cancel(job_id, NOW + 2) is CancelOutcome.FINISHED


async def test_cancel_a_finished_or_missing_job(backend: Backend) -> None:
    ids = await one_in_each_state(backend)
    for state in TERMINAL_STATES:
        before = await get(backend, ids[state])
        events = await event_types(backend, ids[state])
        assert await backend.cancel(ids[state], NOW + 9) is CancelOutcome.FINISHED, state
        assert await get(backend, ids[state]) == before, state
        assert await event_types(backend, ids[state]) == events, state
    assert await backend.cancel(999_999, NOW) is CancelOutcome.MISSING


async def test_cancel_jobs_cancels_matching_upcoming_jobs_only(backend: Backend) -> None:
    ids = await one_in_each_state(backend)  # untagged
    tagged = await enqueue(
        backend,
        new_job("t-queued", tags=("x", "y")),
        new_job("t-scheduled", tags=("x",), run_at=NOW + 60),
        new_job("t-running", tags=("x",), channel="run"),
        new_job("t-other", tags=("y",)),
    )
    assert await claim_ids(backend, token="r", channels=("run",)) == [tagged[2]]
    count = await backend.cancel_jobs(JobFilter(tags=("x",)), NOW + 1)
    assert count == 2
    assert [(await get(backend, i)).state for i in tagged] == [
        "cancelled",
        "cancelled",
        "running",
        "queued",
    ]
    assert await backend.cancel_requests([tagged[2]]) == frozenset()  # running: untouched
    # the untagged ones kept their states
    assert {s: (await get(backend, i)).state for s, i in ids.items()} == {s: s for s in ids}


async def test_cancel_jobs_by_name_channel_tenant_and_state(backend: Backend) -> None:
    a, b, c, d = await enqueue(
        backend,
        new_job("x", channel="one", tenant="t"),
        new_job("x", channel="two", tenant="t"),
        new_job("y", channel="one", tenant="t"),
        new_job("x", channel="one", tenant="u", run_at=NOW + 5),
    )
    assert await backend.cancel_jobs(JobFilter(name="x", channel="one", tenant="t"), NOW) == 1
    assert await backend.cancel_jobs(JobFilter(state=JobState.SCHEDULED), NOW) == 1
    assert [(await get(backend, i)).state for i in (a, b, c, d)] == [
        "cancelled",
        "queued",
        "queued",
        "cancelled",
    ]
    assert await backend.cancel_jobs(JobFilter(name="nothing"), NOW) == 0


# -- retry --------------------------------------------------------------------------------


async def test_retry_a_failed_or_cancelled_job(backend: Backend) -> None:
    ids = await one_in_each_state(backend)
    for state in (JobState.FAILED, JobState.CANCELLED):
        job_id = ids[state]
        before = await get(backend, job_id)
        result = await backend.retry(job_id, NOW + 100)
        assert result == RetryResult(RetryOutcome.RETRIED)
        assert result.outcome is RetryOutcome.RETRIED
        job = await get(backend, job_id)
        assert (job.state, job.attempts, job.stalls) == ("queued", 0, 0), state  # fresh
        assert job.errors == before.errors, state  # the history stays
    assert (await get(backend, ids[JobState.FAILED])).errors  # it had one
    # queued and due at the retry's now: claimed with attempt 1
    taken = await claim(backend, now=NOW + 100)
    assert sorted((j.id, j.attempts) for j in taken) == sorted(
        [(ids[JobState.FAILED], 1), (ids[JobState.CANCELLED], 1), (ids[JobState.QUEUED], 1)]
    )


async def test_retry_forgets_the_stalls(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())
    await claim(backend, token="dead")
    await finish(
        backend, job_id, "dead", state=JobState.FAILED, at=NOW + 31, event="stalled",
        error=error(), stall=True, expired_before=NOW + 31,
    )  # fmt: skip
    assert (await get(backend, job_id)).stalls == 1
    assert await backend.retry(job_id, NOW + 40) == RetryResult(RetryOutcome.RETRIED)
    job = await get(backend, job_id)
    assert (job.state, job.attempts, job.stalls) == ("queued", 0, 0)
    [again] = await claim(backend, token="t2", now=NOW + 40)
    assert (again.attempts, again.stalls) == (1, 0)


async def test_retry_refuses_other_states_and_says_which(backend: Backend) -> None:
    ids = await one_in_each_state(backend)
    for state in (*UPCOMING_STATES, JobState.RUNNING, JobState.COMPLETED):
        before = await get(backend, ids[state])
        result = await backend.retry(ids[state], NOW + 1)
        assert result == RetryResult(RetryOutcome.NOT_RETRYABLE, state), state
        assert result.outcome is RetryOutcome.NOT_RETRYABLE
        assert await get(backend, ids[state]) == before, state


async def test_retry_a_missing_job(backend: Backend) -> None:
    result = await backend.retry(777_777, NOW)
    assert result == RetryResult(RetryOutcome.MISSING, None)
    assert result.outcome is RetryOutcome.MISSING


# -- set_paused ---------------------------------------------------------------------------


async def claimable(backend: Backend, *channels: str) -> set[str]:
    """Which of ``channels`` a claim would take a job from right now (claims nothing:
    the probe job of each channel is put straight back)."""
    found = set()
    for job in await claim(backend, token="probe", channels=channels or None, limit=100):
        found.add(job.channel)
        await finish(
            backend,
            job.id,
            "probe",
            state=JobState.QUEUED,
            run_at=NOW,
            refund_attempt=True,
            event="snoozed",
        )
    return found


async def test_pause_and_resume_one_channel(backend: Backend) -> None:
    await enqueue(backend, new_job(channel="a"), new_job(channel="b"))
    await backend.set_paused("a", True)
    assert await claimable(backend, "a", "b") == {"b"}
    await backend.set_paused("a", True)  # twice: still just paused
    await backend.set_paused("a", False)
    assert await claimable(backend, "a", "b") == {"a", "b"}


async def test_pause_everything_then_resume_one_leaves_it_paused(backend: Backend) -> None:
    await enqueue(backend, new_job(channel="a"), new_job(channel="b"))
    await backend.set_paused(None, True)
    await enqueue(backend, new_job(channel="new"))  # a channel born after the pause
    assert await claimable(backend, "a", "b", "new") == set()
    await backend.set_paused("a", False)
    assert await claimable(backend, "a", "b", "new") == set()
    await backend.set_paused(None, False)
    assert await claimable(backend, "a", "b", "new") == {"a", "b", "new"}


async def test_resume_everything_clears_each_channels_pause(backend: Backend) -> None:
    await enqueue(backend, new_job(channel="a"), new_job(channel="b"), new_job(channel="c"))
    await backend.set_paused("a", True)
    await backend.set_paused("b", True)
    assert await claimable(backend, "a", "b", "c") == {"c"}
    await backend.set_paused(None, False)  # without a preceding pause-everything
    assert await claimable(backend, "a", "b", "c") == {"a", "b", "c"}
    await backend.set_paused("a", True)
    await backend.set_paused(None, True)
    await backend.set_paused(None, False)
    assert await claimable(backend, "a", "b", "c") == {"a", "b", "c"}


async def test_a_channel_named_star_is_just_a_channel(backend: Backend) -> None:
    await enqueue(backend, new_job(channel="*"), new_job(channel="a"))
    await backend.set_paused("*", True)
    assert await claimable(backend, "*", "a") == {"a"}  # not every channel
    assert await claimable(backend) == {"a"}
    await backend.set_paused(None, True)
    await backend.set_paused("*", False)  # resuming "*" does not resume everything
    assert await claimable(backend, "*", "a") == set()
    await backend.set_paused(None, False)
    assert await claimable(backend, "*", "a") == {"*", "a"}
    await backend.set_paused("*", True)
    await backend.set_paused("*", False)
    assert await claimable(backend, "*", "a") == {"*", "a"}

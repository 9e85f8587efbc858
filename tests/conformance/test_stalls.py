"""Stalls (DESIGN.md "A dead worker is not the job's fault"): a job whose worker died is
rescued to ``queued`` without using up an attempt, up to ``max_stalls`` rescues; one more
and it fails with ``Stalled``. ``job.attempts`` counts runs started, ``job.stalls`` the
runs whose worker died, and handler failures get ``max_attempts`` runs that did not
stall."""

from __future__ import annotations

import pytest

import conveyor
from conveyor import JobState
from conveyor.backends.base import ClaimParams
from conveyor.testing import ManualClock
from tests.conformance._util import Events


async def _die(queue: conveyor.Queue, clock: ManualClock, token: str) -> None:
    """A worker claims every due job and dies (nothing written); its lease (2 s) runs out
    and maintenance rescues the jobs."""
    backend = await queue.engine.backend()
    now = clock.now()
    claimed = await backend.claim(
        ClaimParams(worker_id=token, token=token, limit=10, now=now, lease_expires_at=now + 2)
    )
    assert claimed, "nothing was due to claim"
    clock.advance(3)
    await queue.run_maintenance()


async def test_a_job_whose_worker_died_runs_again_without_using_an_attempt(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    events = Events(cq)
    seen: list[tuple[int, int]] = []

    @cq.job("deploy-victim")  # attempts=1, max_stalls=1: the defaults
    async def victim(payload: object, ctx: conveyor.Context) -> str:
        seen.append((ctx.attempt, ctx.max_attempts))
        return "done"

    job_id = await victim.enqueue()
    await _die(cq, clock, "killed")
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.stalls) == (JobState.QUEUED, 1, 1)
    assert job.finished_at is None
    assert job.last_error is not None and job.last_error["type"] == "LeaseExpired"
    stored = [e.type for e in await cq.get_job_events(job_id)]
    assert stored == ["enqueued", "started", "stalled"]
    assert events.types(job_id) == ["enqueued", "stalled"]

    assert await cq.worker().run_once() == 1
    # ctx.attempt counts runs started; ctx.max_attempts grows with each stalled run
    assert seen == [(2, 2)]
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.result, job.attempts, job.stalls) == (JobState.COMPLETED, "done", 2, 1)


async def test_one_stall_more_than_max_stalls_fails_the_job(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    events = Events(cq)
    job_id = await cq.enqueue("crashes-its-worker", attempts=3)  # max_stalls: default 1
    await _die(cq, clock, "first")
    assert (await cq.get_job(job_id)).state is JobState.QUEUED  # type: ignore[union-attr]
    await _die(cq, clock, "second")
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.stalls) == (JobState.FAILED, 2, 2)
    assert job.finished_at is not None
    assert [e["type"] for e in job.errors] == ["LeaseExpired", "Stalled"]
    assert job.last_error is not None and "2 times" in job.last_error["message"]
    assert job.last_error["attempt"] == 2
    stored = [e.type for e in await cq.get_job_events(job_id)]
    assert stored == ["enqueued", "started", "stalled", "started", "stalled"]
    assert events.types(job_id) == ["enqueued", "stalled", "stalled", "failed"]
    assert await cq.worker().run_once() == 0  # not run again


async def test_max_stalls_zero_fails_on_the_first_death(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("fragile", max_stalls=0, attempts=5)
    async def fragile(payload: object, ctx: conveyor.Context) -> None:
        raise AssertionError("never runs")

    job_id = await fragile.enqueue()
    await _die(cq, clock, "dead")
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.stalls) == (JobState.FAILED, 1, 1)
    assert job.last_error is not None and job.last_error["type"] == "Stalled"


async def test_max_stalls_as_an_enqueue_option(cq: conveyor.Queue, clock: ManualClock) -> None:
    @cq.job("tolerant", max_stalls=0)
    async def tolerant(payload: object, ctx: conveyor.Context) -> int:
        return ctx.attempt

    lenient = await tolerant.enqueue(max_stalls=2)  # overrides the definition's 0
    strict = await cq.enqueue_many([conveyor.JobSpec("tolerant", max_stalls=0)])
    await _die(cq, clock, "one")
    await _die(cq, clock, "two")
    job = await cq.get_job(lenient)
    assert job is not None and (job.state, job.stalls) == (JobState.QUEUED, 2)
    assert (await cq.get_job(strict[0])).state is JobState.FAILED  # type: ignore[union-attr]
    await _die(cq, clock, "three")
    job = await cq.get_job(lenient)
    assert job is not None and (job.state, job.attempts, job.stalls) == (JobState.FAILED, 3, 3)


async def test_a_handler_failure_after_a_stall_still_gets_its_retries(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    runs: list[int] = []

    @cq.job("flaky", attempts=2, backoff=conveyor.Backoff.fixed(10))
    async def flaky(payload: object, ctx: conveyor.Context) -> str:
        runs.append(ctx.attempt)
        if len(runs) == 1:
            raise ValueError("first real attempt fails")
        return "ok"

    job_id = await flaky.enqueue()
    await _die(cq, clock, "dead")  # run 1 stalls
    assert await cq.worker().run_once() == 1  # run 2 fails: the first of its 2 attempts
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.stalls) == (JobState.SCHEDULED, 2, 1)
    clock.advance(11)
    assert await cq.worker().run_once() == 1  # run 3: the second attempt
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.result, job.attempts, job.stalls) == (JobState.COMPLETED, "ok", 3, 1)
    assert runs == [2, 3]
    assert [e["type"] for e in job.errors] == ["LeaseExpired", "ValueError"]


async def test_retries_stay_bounded_by_attempts_over_runs_that_did_not_stall(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("always-fails", attempts=2, max_stalls=3, backoff=conveyor.Backoff.fixed(10))
    async def always_fails(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError(f"run {ctx.attempt}")

    job_id = await always_fails.enqueue()
    await _die(cq, clock, "a")
    assert await cq.worker().run_once() == 1  # counted attempt 1 fails: retried
    assert (await cq.get_job(job_id)).state is JobState.SCHEDULED  # type: ignore[union-attr]
    clock.advance(11)
    await cq.run_maintenance()  # due again: queued
    await _die(cq, clock, "b")
    assert await cq.worker().run_once() == 1  # counted attempt 2 fails: no more
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.attempts, job.stalls) == (JobState.FAILED, 4, 2)
    assert [e["type"] for e in job.errors] == [
        "LeaseExpired",
        "ValueError",
        "LeaseExpired",
        "ValueError",
    ]


async def test_a_cancel_requested_on_a_stalled_job_ends_cancelled(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    job_id = await cq.enqueue("doomed", attempts=3)
    await _die(cq, clock, "first")
    backend = await cq.engine.backend()
    now = clock.now()
    await backend.claim(
        ClaimParams(worker_id="w", token="second", limit=1, now=now, lease_expires_at=now + 2)
    )
    assert await cq.cancel(job_id) is True  # running: its (dying) worker is asked to stop
    clock.advance(3)
    await cq.run_maintenance()
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.CANCELLED
    assert (job.attempts, job.stalls) == (2, 2)  # its worker died twice
    assert job.finished_at is not None
    assert await cq.worker().run_once() == 0


async def test_a_cancel_requested_wins_over_a_spent_stall_budget(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    job_id = await cq.enqueue("doomed", max_stalls=0)
    backend = await cq.engine.backend()
    now = clock.now()
    await backend.claim(
        ClaimParams(worker_id="w", token="t", limit=1, now=now, lease_expires_at=now + 2)
    )
    assert await cq.cancel(job_id) is True
    clock.advance(3)
    await cq.run_maintenance()
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.CANCELLED


async def test_retry_after_a_stall_failure_starts_afresh(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    job_id = await cq.enqueue("fragile", max_stalls=0)
    await _die(cq, clock, "dead")
    assert (await cq.get_job(job_id)).state is JobState.FAILED  # type: ignore[union-attr]
    await cq.retry(job_id)
    job = await cq.get_job(job_id)
    assert job is not None and (job.state, job.attempts, job.stalls) == (JobState.QUEUED, 0, 0)


@pytest.mark.parametrize("bad", [-1, 1001, 1.5, True, "1", None])
async def test_bad_max_stalls_is_refused(cq: conveyor.Queue, bad: object) -> None:
    if bad is not None:
        with pytest.raises(conveyor.ValidationError, match="max_stalls"):
            await cq.enqueue("x", max_stalls=bad)
        with pytest.raises(conveyor.ValidationError, match="max_stalls"):
            await cq.enqueue_many([conveyor.JobSpec("x", max_stalls=bad)])  # type: ignore[arg-type]
    with pytest.raises(conveyor.ValidationError, match="max_stalls"):

        @cq.job("bad-definition", max_stalls=bad)  # type: ignore[arg-type]
        async def bad_definition(payload: object, ctx: conveyor.Context) -> None: ...

    assert await cq.list_jobs() == []


async def test_max_stalls_bounds_are_accepted(cq: conveyor.Queue) -> None:
    a = await cq.enqueue("x", max_stalls=0)
    b = await cq.enqueue("x", max_stalls=1000)
    assert {j.id for j in await cq.list_jobs()} == {a, b}

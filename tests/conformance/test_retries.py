"""Retries: attempts, every error kept, backoff, Retry / Fatal, queue.retry()."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

import conveyor
from conveyor import Backoff, JobState
from conveyor.testing import ManualClock, drain


async def test_every_attempts_error_is_kept(cq: conveyor.Queue) -> None:
    seen: list[tuple[int, int]] = []

    @cq.job("flaky", attempts=3, backoff=Backoff.fixed(0))
    async def flaky(payload: object, ctx: conveyor.Context) -> None:
        seen.append((ctx.attempt, ctx.max_attempts))
        raise ValueError(f"boom {ctx.attempt}")

    job_id = await flaky.enqueue()
    assert await drain(cq) == 3
    assert seen == [(1, 3), (2, 3), (3, 3)]
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.attempts == 3
    assert [e["attempt"] for e in job.errors] == [1, 2, 3]
    assert [e["type"] for e in job.errors] == ["ValueError"] * 3
    assert [e["message"] for e in job.errors] == ["boom 1", "boom 2", "boom 3"]
    for err in job.errors:
        assert "ValueError: boom" in err["traceback"]
        assert "flaky" in err["traceback"]  # the handler's frame is in it
        assert datetime.fromisoformat(err["at"]).tzinfo is not None
    assert job.last_error == job.errors[-1]
    assert job.finished_at is not None
    types = [e.type for e in await cq.get_job_events(job_id)]
    assert types == ["enqueued", "started", "retrying", "started", "retrying", "started", "failed"]
    attempts = [
        e.attempt
        for e in await cq.get_job_events(job_id)
        if e.type in ("started", "retrying", "failed")
    ]
    assert attempts == [1, 1, 2, 2, 3, 3]


async def test_success_after_failures_keeps_the_errors(cq: conveyor.Queue) -> None:
    @cq.job("second-time", attempts=5, backoff=Backoff.fixed(0))
    async def second(payload: object, ctx: conveyor.Context) -> str:
        if ctx.attempt < 2:
            raise RuntimeError("first try fails")
        return "ok"

    job_id = await second.enqueue()
    await drain(cq)
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED and job.result == "ok"
    assert job.attempts == 2 and job.max_attempts == 5
    assert [e["message"] for e in job.errors] == ["first try fails"]


async def test_fixed_backoff_schedules_the_retry(cq: conveyor.Queue, clock: ManualClock) -> None:
    @cq.job("fixed", attempts=3, backoff=Backoff.fixed(10))
    async def fixed(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("again")

    job_id = await fixed.enqueue()
    for attempt in (1, 2):
        assert await cq.worker().run_once() == 1
        job = await cq.get_job(job_id)
        assert job is not None
        assert job.state is JobState.SCHEDULED
        assert job.attempts == attempt
        assert job.run_at == clock.datetime + timedelta(seconds=10)
        clock.advance(9.5)
        assert await cq.worker().run_once() == 0  # not due yet
        clock.advance(0.5)
    assert await cq.worker().run_once() == 1
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED and job.attempts == 3


async def test_exponential_backoff_with_max(cq: conveyor.Queue, clock: ManualClock) -> None:
    @cq.job("expo", attempts=4, backoff=Backoff.exponential(2, max=5))
    async def expo(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("again")

    job_id = await expo.enqueue()
    for expected in (2, 4, 5):
        assert await cq.worker().run_once() == 1
        job = await cq.get_job(job_id)
        assert job is not None and job.state is JobState.SCHEDULED
        assert (job.run_at - clock.datetime).total_seconds() == pytest.approx(expected)
        clock.advance(expected)
    assert await cq.worker().run_once() == 1
    assert (await cq.get_job(job_id)).state is JobState.FAILED  # type: ignore[union-attr]


async def test_default_backoff_is_jittered_exponential(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("default-backoff", attempts=2)
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("again")

    job_id = await handler.enqueue()
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.SCHEDULED
    assert 1.0 <= (job.run_at - clock.datetime).total_seconds() <= 2.0


async def test_job_backoff_option_overrides_the_definition(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("override", attempts=2, backoff=Backoff.fixed(100))
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("again")

    job_id = await handler.enqueue(backoff=Backoff.fixed(7))
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.run_at == clock.datetime + timedelta(seconds=7)


async def test_attempts_option_overrides_the_definition(cq: conveyor.Queue) -> None:
    @cq.job("attempts", attempts=5, backoff=Backoff.fixed(0))
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("again")

    job_id = await handler.enqueue(attempts=2)
    assert await drain(cq) == 2
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED and job.attempts == 2


@pytest.mark.parametrize("delay", [30, 30.0, timedelta(seconds=30)])
async def test_retry_with_a_delay(cq: conveyor.Queue, clock: ManualClock, delay: object) -> None:
    @cq.job("retry-me", attempts=3, backoff=Backoff.fixed(1000))
    async def handler(payload: object, ctx: conveyor.Context) -> str:
        if ctx.attempt == 1:
            raise conveyor.Retry(delay=delay)  # type: ignore[arg-type]
        return "second"

    job_id = await handler.enqueue()
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.state is JobState.SCHEDULED
    assert job.run_at == clock.datetime + timedelta(seconds=30)  # not the 1000 s backoff
    assert job.attempts == 1
    clock.advance(30)
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == "second"
    assert job.attempts == 2


async def test_retry_without_delay_uses_the_backoff(cq: conveyor.Queue, clock: ManualClock) -> None:
    @cq.job("retry-backoff", attempts=3, backoff=Backoff.fixed(42))
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        raise conveyor.Retry()

    job_id = await handler.enqueue()
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.run_at == clock.datetime + timedelta(seconds=42)


async def test_retry_zero_delay_runs_again_at_once(cq: conveyor.Queue) -> None:
    @cq.job("retry-now", attempts=3, backoff=Backoff.fixed(1000))
    async def handler(payload: object, ctx: conveyor.Context) -> int:
        if ctx.attempt < 3:
            raise conveyor.Retry(delay=0)
        return ctx.attempt

    job_id = await handler.enqueue()
    assert await drain(cq) == 3
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == 3


async def test_retry_when_no_attempts_remain_fails(cq: conveyor.Queue) -> None:
    @cq.job("retry-out", attempts=2)
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        raise conveyor.Retry(delay=0)

    job_id = await handler.enqueue()
    assert await drain(cq) == 2
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED and job.attempts == 2
    assert len(job.errors) == 2


async def test_retry_from_a_sync_handler(cq: conveyor.Queue, clock: ManualClock) -> None:
    @cq.job("sync-retry", attempts=2)
    def handler(payload: object, ctx: conveyor.Context) -> None:
        raise conveyor.Retry(delay=5)

    job_id = await handler.enqueue()
    await cq.worker().run_once()
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.SCHEDULED
    assert job.run_at == clock.datetime + timedelta(seconds=5)


@pytest.mark.parametrize("sync", [False, True])
async def test_fatal_fails_at_once(cq: conveyor.Queue, sync: bool) -> None:
    if sync:

        @cq.job("fatal", attempts=5, backoff=Backoff.fixed(0))
        def handler(payload: object, ctx: conveyor.Context) -> None:
            raise conveyor.Fatal("card declined")
    else:

        @cq.job("fatal", attempts=5, backoff=Backoff.fixed(0))
        async def handler(payload: object, ctx: conveyor.Context) -> None:
            raise conveyor.Fatal("card declined")

    job_id = await handler.enqueue()
    assert await cq.worker().run_once() == 1
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.attempts == 1
    assert job.last_error is not None
    assert job.last_error["type"] == "Fatal"
    assert job.last_error["message"] == "card declined"
    assert [e.type for e in await cq.get_job_events(job_id)][-1] == "failed"


async def test_a_job_waiting_for_its_retry_does_not_block_others(cq: conveyor.Queue) -> None:
    ran: list[str] = []

    @cq.job("fails-first", attempts=3, backoff=Backoff.fixed(60), priority=-100)
    async def fails(payload: object, ctx: conveyor.Context) -> None:
        ran.append("fails")
        raise ValueError("not yet")

    @cq.job("ordinary", priority=100)
    async def ordinary(payload: object, ctx: conveyor.Context) -> None:
        ran.append("ordinary")

    f = await fails.enqueue()
    o = [await ordinary.enqueue() for _ in range(3)]
    assert await cq.worker(concurrency=1).run_once() == 4
    assert ran == ["fails", "ordinary", "ordinary", "ordinary"]
    assert (await cq.get_job(f)).state is JobState.SCHEDULED  # type: ignore[union-attr]
    for job_id in o:
        assert (await cq.get_job(job_id)).state is JobState.COMPLETED  # type: ignore[union-attr]


async def test_run_once_also_runs_a_retry_that_is_due_at_once(cq: conveyor.Queue) -> None:
    """run_once processes what is due now: a retry with no delay is due now."""

    @cq.job("again-now", attempts=2, backoff=Backoff.fixed(0))
    async def handler(payload: object, ctx: conveyor.Context) -> int:
        if ctx.attempt == 1:
            raise ValueError("first")
        return ctx.attempt

    job_id = await handler.enqueue()
    assert await cq.worker().run_once() == 2
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == 2


# -- queue.retry() ----------------------------------------------------------------------------
async def test_retry_a_failed_job_gives_fresh_attempts_and_keeps_errors(cq: conveyor.Queue) -> None:
    mode = {"fail": True}

    @cq.job("manual", attempts=2, backoff=Backoff.fixed(0))
    async def manual(payload: object, ctx: conveyor.Context) -> str:
        if mode["fail"]:
            raise ValueError(f"fail {ctx.attempt}")
        return f"ok at {ctx.attempt}/{ctx.max_attempts}"

    job_id = await manual.enqueue()
    await drain(cq)
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED and job.attempts == 2

    await cq.retry(job_id)
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.attempts == 0
    assert job.max_attempts == 2
    assert job.finished_at is None
    assert [e["message"] for e in job.errors] == ["fail 1", "fail 2"]

    mode["fail"] = False
    await drain(cq)
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED and job.result == "ok at 1/2"
    assert [e["message"] for e in job.errors] == ["fail 1", "fail 2"]


async def test_retry_a_cancelled_job(cq: conveyor.Queue) -> None:
    ran: list[int] = []

    @cq.job("cancelled-then-retried")
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        ran.append(ctx.job_id)

    job_id = await handler.enqueue(delay=3600)
    assert await cq.cancel(job_id) is True
    await cq.retry(job_id)
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.QUEUED
    assert await cq.worker().run_once() == 1
    assert ran == [job_id]


async def test_retry_in_other_states_raises(cq: conveyor.Queue) -> None:
    @cq.job("states")
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        return None

    queued = await handler.enqueue()
    scheduled = await handler.enqueue(delay=3600)
    for job_id in (queued, scheduled):
        with pytest.raises(conveyor.InvalidStateError):
            await cq.retry(job_id)
    await cq.worker().run_once()
    with pytest.raises(conveyor.InvalidStateError):
        await cq.retry(queued)  # completed
    with pytest.raises(conveyor.InvalidStateError):
        await cq.retry(987654)  # unknown
    assert (await cq.get_job(queued)).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert (await cq.get_job(scheduled)).state is JobState.SCHEDULED  # type: ignore[union-attr]


async def test_retry_a_running_job_raises(queue: conveyor.Queue) -> None:
    import asyncio

    from tests.conformance._util import running, wait_state

    go = asyncio.Event()

    @queue.job("busy")
    async def busy(payload: object, ctx: conveyor.Context) -> None:
        await go.wait()

    job_id = await busy.enqueue()
    async with running(queue.worker()):
        await wait_state(queue, job_id, JobState.RUNNING)
        with pytest.raises(conveyor.InvalidStateError):
            await queue.retry(job_id)
        go.set()
        await wait_state(queue, job_id, JobState.COMPLETED)

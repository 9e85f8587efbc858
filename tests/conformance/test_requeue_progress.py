"""A job sent back to run again starts from 0 % (issue #13): a drained requeue, a retry
after a failed attempt; it reaches 100 % when it completes later."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import conveyor
from conveyor import Backoff, JobState
from conveyor.testing import ManualClock, drain


async def test_a_drained_job_is_requeued_at_zero_progress(queue: conveyor.Queue) -> None:
    at_99 = asyncio.Event()
    block = [True]
    seen_at_start: list[int] = []

    @queue.job("long-progress")
    async def long_progress(payload: object, ctx: conveyor.Context) -> str:
        job = await queue.get_job(ctx.job_id)
        assert job is not None
        seen_at_start.append(job.progress)
        if not block[0]:
            return "second run"
        await ctx.set_progress(99)
        at_99.set()
        await asyncio.sleep(30)
        return "never"

    job_id = await long_progress.enqueue()
    worker = queue.worker()
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(at_99.wait(), 10)
    job = await queue.get_job(job_id)
    assert job is not None and (job.state, job.progress) == (JobState.RUNNING, 99)
    await asyncio.wait_for(worker.stop(drain_timeout=0.1), 10)
    await asyncio.wait_for(task, 10)
    job = await queue.get_job(job_id)
    assert job is not None
    assert (job.state, job.progress, job.attempts) == (JobState.QUEUED, 0, 0)
    # another worker runs it later, from 0 % to done
    block[0] = False
    assert await queue.worker().run_once() == 1
    assert seen_at_start == [0, 0]
    job = await queue.get_job(job_id)
    assert job is not None
    assert (job.state, job.progress, job.result) == (JobState.COMPLETED, 100, "second run")


async def test_a_retried_job_starts_again_at_zero_progress(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    seen_at_start: list[int] = []

    @cq.job("flaky-progress", attempts=2, backoff=Backoff.fixed(60))
    async def flaky_progress(payload: object, ctx: conveyor.Context) -> str:
        job = await cq.get_job(ctx.job_id)
        assert job is not None
        seen_at_start.append(job.progress)
        await ctx.set_progress(99)
        if ctx.attempt == 1:
            raise ValueError("first attempt fails at 99 %")
        return "ok"

    job_id = await flaky_progress.enqueue()
    assert await drain(cq) == 1
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.progress, job.attempts) == (JobState.SCHEDULED, 0, 1)
    clock.advance(timedelta(seconds=61))
    assert await drain(cq) == 1
    assert seen_at_start == [0, 0]
    job = await cq.get_job(job_id)
    assert job is not None
    assert (job.state, job.progress, job.result) == (JobState.COMPLETED, 100, "ok")

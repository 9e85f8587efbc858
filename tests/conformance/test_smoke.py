"""A first end-to-end check on every backend: enqueue, run, result, events."""

from __future__ import annotations

import conveyor
from conveyor import JobState


async def test_enqueue_run_complete(queue: conveyor.Queue) -> None:
    @queue.job("add")
    async def add(payload: dict, ctx: conveyor.Context) -> int:
        await ctx.set_progress(50)
        ctx.log.info("adding")
        return payload["a"] + payload["b"]

    job_id = await add.enqueue({"a": 1, "b": 2})
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.QUEUED
    assert await queue.worker(concurrency=2).run_once() == 1
    job = await queue.get_job(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.result == 3
    assert job.attempts == 1
    assert [e.type for e in await queue.get_job_events(job_id)] == [
        "enqueued",
        "started",
        "progress",
        "completed",
    ]
    assert [r.message for r in await queue.get_job_logs(job_id)] == ["adding"]

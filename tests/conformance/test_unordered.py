"""``queue.worker(ordered=False)``: due jobs claimed in any order, every one of them run
once, groups still one at a time."""

from __future__ import annotations

import pytest

import conveyor
from conveyor import JobState
from tests.conformance._util import Concurrency


async def test_an_unordered_worker_runs_every_job_once(queue: conveyor.Queue) -> None:
    ran: list[int] = []
    gauge = Concurrency()

    @queue.job("any-order")
    async def any_order(payload: int, ctx: conveyor.Context) -> int:
        ran.append(payload)
        return payload

    @queue.job("grouped")
    async def grouped(payload: int, ctx: conveyor.Context) -> None:
        gauge.enter()
        try:
            ran.append(payload)
        finally:
            gauge.exit()

    specs = [conveyor.JobSpec("any-order", i, priority=i % 3) for i in range(40)]
    specs += [conveyor.JobSpec("grouped", 100 + i, group="g") for i in range(5)]
    ids = await queue.enqueue_many(specs)
    worker = queue.worker(concurrency=8, ordered=False)
    assert worker.ordered is False
    assert await worker.run_once() == 45
    assert sorted(ran) == [*range(40), *range(100, 105)]
    assert gauge.max == 1  # a group still runs one at a time
    for job_id in ids:
        job = await queue.get_job(job_id)
        assert job is not None and job.state is JobState.COMPLETED


@pytest.mark.parametrize("bad", [0, 1, "false", None])
async def test_ordered_must_be_a_bool(queue: conveyor.Queue, bad: object) -> None:
    with pytest.raises(conveyor.ValidationError, match="ordered"):
        queue.worker(ordered=bad)  # type: ignore[arg-type]

"""Workflows across real worker processes: a 1,000-member batch worked by three
processes, one of them SIGKILLed mid-way, fires its callback exactly once, after the last
member (judged from a log the handlers append to)."""

from __future__ import annotations

from pathlib import Path

import conveyor
from tests.conftest import Store, wait_for
from tests.integration.test_processes import (
    Workers,
    assert_nothing_running,
    fast_queue,
    probe_lines,
)


async def test_a_batch_callback_fires_once_after_the_last_member(
    store: Store, workers: Workers, tmp_path: Path
) -> None:
    q = await fast_queue(store)
    probe = tmp_path / "batch"
    batch = await q.enqueue_batch(
        [conveyor.JobSpec("batch-member", {"probe": str(probe)}) for _ in range(1000)],
        on_complete=conveyor.JobSpec("batch-done", {"probe": str(probe)}),
    )
    victim = workers.start(concurrency=10)
    workers.start(concurrency=10)
    workers.start(concurrency=10)
    await wait_for(
        lambda: sum(1 for x in probe_lines(probe) if x[0] == "member") >= 200, timeout=60
    )
    victim.kill()  # mid-way: its running members are rescued and run again
    victim.wait(10)
    await wait_for(lambda: any(x[0] == "callback" for x in probe_lines(probe)), timeout=120)
    lines = probe_lines(probe)
    callbacks = [x for x in lines if x[0] == "callback"]
    members = [x for x in lines if x[0] == "member"]
    assert len({x[1] for x in members}) == 1000  # every member ran (some maybe twice)
    [callback] = callbacks
    assert float(callback[2]) >= max(float(x[2]) for x in members)  # after the last member
    assert (callback[3], callback[4]) == ("1000", "1000")
    done = await q.get_batch(batch.id)
    assert done is not None and (done.state, done.completed, done.callback_job_id) == (
        "done", 1000, int(callback[1]),
    )  # fmt: skip
    await assert_nothing_running(q)

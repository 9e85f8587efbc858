"""Channels: a worker takes only its channels' jobs; counts per channel."""

from __future__ import annotations

import conveyor
from conveyor import JobState
from tests.conformance._util import running, wait_state


async def test_worker_takes_jobs_only_from_its_channels(queue: conveyor.Queue) -> None:
    ran: list[str] = []

    @queue.job("c")
    async def c(payload: str, ctx: conveyor.Context) -> None:
        ran.append(payload)

    await c.enqueue("emails-1", channel="emails")
    await c.enqueue("reports-1", channel="reports")
    await c.enqueue("default-1")
    await c.enqueue("emails-2", channel="emails")
    assert await queue.worker(channels=["emails"]).run_once() == 2
    assert sorted(ran) == ["emails-1", "emails-2"]
    assert await queue.worker(channels=["nothing-here"]).run_once() == 0
    assert await queue.worker(channels=["reports", "default"]).run_once() == 2
    assert sorted(ran) == ["default-1", "emails-1", "emails-2", "reports-1"]


async def test_two_workers_on_different_channels(store) -> None:
    q1, q2 = store.queue(poll_interval=0.05), store.queue(poll_interval=0.05)
    seen: dict[str, list[str]] = {"w1": [], "w2": []}
    for q, key in ((q1, "w1"), (q2, "w2")):

        @q.job("c")
        async def c(payload: str, ctx: conveyor.Context, key: str = key) -> None:
            seen[key].append(ctx.channel)

    await q1.migrate()
    ids = [await q1.enqueue("c", i, channel=ch) for i, ch in enumerate(["x", "y", "x", "y", "x"])]
    async with running(q1.worker(channels=["x"])), running(q2.worker(channels=["y"])):
        for job_id in ids:
            await wait_state(q1, job_id, JobState.COMPLETED)
    assert seen == {"w1": ["x", "x", "x"], "w2": ["y", "y"]}


async def test_counts_per_channel(queue: conveyor.Queue) -> None:
    await queue.enqueue("a", None, channel="one")
    await queue.enqueue("a", None, channel="one", delay=60)
    await queue.enqueue("a", None, channel="two")
    one = await queue.counts(channel="one")
    two = await queue.counts(channel="two")
    everything = await queue.counts()
    assert one["queued"] == 1 and one["scheduled"] == 1 and sum(one.values()) == 2
    assert two["queued"] == 1 and sum(two.values()) == 1
    assert everything["queued"] == 2 and everything["scheduled"] == 1
    assert sum((await queue.counts(channel="none")).values()) == 0


async def test_list_jobs_by_channel(queue: conveyor.Queue) -> None:
    a = await queue.enqueue("a", None, channel="one")
    await queue.enqueue("a", None, channel="two")
    assert [j.id for j in await queue.list_jobs(channel="one")] == [a]

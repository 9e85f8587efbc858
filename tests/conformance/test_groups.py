"""Groups: never two jobs of a group at once across workers; a crashed worker's group is
freed with its lease; a member scheduled for later does not block due members."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

import conveyor
from conveyor import Backoff, JobSpec, JobState
from conveyor.backends.base import ClaimParams
from conveyor.testing import ManualClock
from tests.conformance._util import running
from tests.conftest import wait_for


async def test_a_group_never_runs_two_jobs_at_once_across_workers(store) -> None:
    lock = threading.Lock()
    now: dict[str, int] = defaultdict(int)
    peak: dict[str, int] = defaultdict(int)
    overall = {"now": 0, "peak": 0}
    done: list[int] = []
    queues = [store.queue(poll_interval=0.05, sweep_interval=0.2) for _ in range(2)]
    for q in queues:

        @q.job("grouped")
        async def grouped(payload: dict, ctx: conveyor.Context) -> None:
            group = payload["group"]
            with lock:
                now[group] += 1
                peak[group] = max(peak[group], now[group])
                overall["now"] += 1
                overall["peak"] = max(overall["peak"], overall["now"])
            await asyncio.sleep(0.02)
            with lock:
                now[group] -= 1
                overall["now"] -= 1
                done.append(ctx.job_id)

    await queues[0].migrate()
    specs = [
        JobSpec("grouped", {"group": g}, group=g) for _ in range(8) for g in ("g1", "g2", "g3")
    ]
    specs += [
        JobSpec("grouped", {"group": f"solo{i}"}) for i in range(6)
    ]  # no group: free to overlap
    await queues[0].enqueue_many(specs)
    async with running(queues[0].worker(concurrency=5)), running(queues[1].worker(concurrency=5)):
        await wait_for(lambda: len(done) == len(specs), 30)
    assert peak["g1"] == peak["g2"] == peak["g3"] == 1
    assert overall["peak"] > 1  # different groups (and ungrouped jobs) did run side by side


async def test_group_members_run_one_at_a_time_with_run_once(queue: conveyor.Queue) -> None:
    active = {"now": 0, "peak": 0}

    @queue.job("g")
    async def g(payload: object, ctx: conveyor.Context) -> None:
        active["now"] += 1
        active["peak"] = max(active["peak"], active["now"])
        await asyncio.sleep(0.01)
        active["now"] -= 1

    await queue.enqueue_many([JobSpec("g", i, group="same") for i in range(6)])
    assert await queue.worker(concurrency=6).run_once() == 6
    assert active["peak"] == 1
    assert (await queue.counts())["completed"] == 6


async def test_a_scheduled_member_does_not_block_due_members(queue: conveyor.Queue) -> None:
    ran: list[str] = []

    @queue.job("member")
    async def member(payload: str, ctx: conveyor.Context) -> None:
        ran.append(payload)

    later = await member.enqueue("later", group="acct-1", delay=3600)
    now = await member.enqueue("now", group="acct-1")
    assert await queue.worker().run_once() == 1
    assert ran == ["now"]
    assert (await queue.get_job(now)).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert (await queue.get_job(later)).state is JobState.SCHEDULED  # type: ignore[union-attr]


async def test_a_member_waiting_for_its_retry_does_not_block_the_group(cq: conveyor.Queue) -> None:
    ran: list[str] = []

    @cq.job("member", attempts=3, backoff=Backoff.fixed(600))
    async def member(payload: str, ctx: conveyor.Context) -> None:
        ran.append(payload)
        if payload == "fails":
            raise ValueError("later")

    failing = await member.enqueue("fails", group="acct", priority=-1)
    fine = await member.enqueue("fine", group="acct")
    assert await cq.worker().run_once() == 2
    assert ran == ["fails", "fine"]
    assert (await cq.get_job(failing)).state is JobState.SCHEDULED  # type: ignore[union-attr]
    assert (await cq.get_job(fine)).state is JobState.COMPLETED  # type: ignore[union-attr]


async def test_a_crashed_workers_group_is_freed_with_its_lease(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    ran: list[str] = []

    @cq.job("member", attempts=2)
    async def member(payload: str, ctx: conveyor.Context) -> None:
        ran.append(payload)

    first = await member.enqueue("first", group="acct")
    second = await member.enqueue("second", group="acct")
    other = await member.enqueue("other-group", group="acct-2")
    backend = await cq.engine.backend()
    (claimed,) = await backend.claim(
        ClaimParams(
            worker_id="dead",
            token="dead",
            limit=1,
            now=clock.now(),
            lease_expires_at=clock.now() + 2,
        )
    )
    assert claimed.id == first
    # While the dead worker's lease lives, the group stays blocked; other groups run.
    assert await cq.worker().run_once() == 1
    assert ran == ["other-group"]
    assert (await cq.get_job(second)).state is JobState.QUEUED  # type: ignore[union-attr]
    # Once the lease expires, the rescue frees the group at once (not hours later).
    clock.advance(2.5)
    assert await cq.worker(concurrency=1).run_once() == 2
    assert sorted(ran) == ["first", "other-group", "second"]
    for job_id in (first, second, other):
        assert (await cq.get_job(job_id)).state is JobState.COMPLETED  # type: ignore[union-attr]


async def test_groups_are_distinct_per_value(queue: conveyor.Queue) -> None:
    """Jobs of different groups are not serialised against each other."""
    barrier = asyncio.Barrier(2)

    @queue.job("pair")
    async def pair(payload: object, ctx: conveyor.Context) -> str:
        await asyncio.wait_for(barrier.wait(), 5)  # needs both running at once
        return "met"

    a = await pair.enqueue(group="g-a")
    b = await pair.enqueue(group="g-b")
    assert await queue.worker(concurrency=2).run_once() == 2
    assert (await queue.get_job(a)).result == "met"  # type: ignore[union-attr]
    assert (await queue.get_job(b)).result == "met"  # type: ignore[union-attr]

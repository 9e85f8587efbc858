"""conveyor.testing: inline_queue, drain, assert_enqueued, ManualClock."""

from __future__ import annotations

import gc
import time
from datetime import UTC, datetime, timedelta

import pytest

import conveyor
from conveyor import JobState
from conveyor.testing import ManualClock, assert_enqueued, drain, inline_queue


# -- inline_queue (its own in-memory store: no backend parameter) --------------------------------
async def test_inline_queue_runs_the_real_engine_in_memory() -> None:
    q = inline_queue()
    try:

        @q.job("double")
        async def double(payload: int, ctx: conveyor.Context) -> int:
            return payload * 2

        job_id = await double.enqueue(21)
        assert await drain(q) == 1
        job = await q.get_job(job_id)
        assert job is not None and job.state is JobState.COMPLETED and job.result == 42
        assert [e.type for e in await q.get_job_events(job_id)] == [
            "enqueued",
            "started",
            "completed",
        ]
    finally:
        await q.close()


async def test_inline_queues_are_private_and_take_settings() -> None:
    clock = ManualClock(datetime(2030, 1, 1, tzinfo=UTC))
    a, b = inline_queue(clock=clock, max_payload_bytes=64), inline_queue()
    try:
        await a.enqueue("x", 1)
        assert sum((await a.counts()).values()) == 1
        assert sum((await b.counts()).values()) == 0
        job = (await a.list_jobs())[0]
        assert job.created_at == datetime(2030, 1, 1, tzinfo=UTC)
        with pytest.raises(conveyor.PayloadError):
            await a.enqueue("x", "y" * 100)
    finally:
        await a.close()
        await b.close()


async def test_inline_queue_sync_enqueue() -> None:
    import asyncio

    q = inline_queue()
    try:
        job_id = await asyncio.to_thread(q.enqueue_sync, "from-sync", {"k": 1})
        await assert_enqueued(q, "from-sync", payload={"k": 1})
        assert (await q.get_job(job_id)) is not None
    finally:
        await q.close()
    gc.collect()  # nothing left unclosed (reported in this test, not a later one)


# -- drain ----------------------------------------------------------------------------------------
async def test_drain_runs_everything_due_including_follow_ups(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    ran: list[str] = []

    @cq.job("parent")
    async def parent(payload: int, ctx: conveyor.Context) -> None:
        ran.append(f"parent {payload}")
        await cq.enqueue("child", payload)
        await cq.enqueue("child", payload + 100, delay=60)  # not due: stays

    @cq.job("child")
    async def child(payload: int, ctx: conveyor.Context) -> None:
        ran.append(f"child {payload}")

    await parent.enqueue(1)
    await parent.enqueue(2)
    assert await drain(cq) == 4
    assert sorted(ran) == ["child 1", "child 2", "parent 1", "parent 2"]
    assert (await cq.counts())["scheduled"] == 2
    assert await drain(cq) == 0
    clock.advance(60)
    assert await drain(cq) == 2
    assert sorted(ran)[:2] == ["child 1", "child 101"]


async def test_drain_gives_up_on_a_job_that_re_enqueues_itself_forever(
    queue: conveyor.Queue,
) -> None:
    @queue.job("forever")
    async def forever(payload: int, ctx: conveyor.Context) -> None:
        await queue.enqueue("forever", payload + 1)

    await forever.enqueue(0)
    with pytest.raises(RuntimeError, match="rounds"):
        await drain(queue, max_rounds=5)


async def test_drain_respects_concurrency(queue: conveyor.Queue) -> None:
    import asyncio

    active = {"now": 0, "peak": 0}

    @queue.job("c")
    async def c(payload: object, ctx: conveyor.Context) -> None:
        active["now"] += 1
        active["peak"] = max(active["peak"], active["now"])
        await asyncio.sleep(0.01)
        active["now"] -= 1

    await queue.enqueue_many([conveyor.JobSpec("c") for _ in range(6)])
    assert await drain(queue, concurrency=2) == 6
    assert active["peak"] == 2


# -- assert_enqueued ------------------------------------------------------------------------------
async def test_assert_enqueued_matches_payload_fields_and_count(queue: conveyor.Queue) -> None:
    a = await queue.enqueue("mail", {"to": "a"}, tenant="t1", tags=["x", "y"], priority=2)
    b = await queue.enqueue("mail", {"to": "b"}, tenant="t2")
    await queue.enqueue("other", {"to": "a"})

    jobs = await assert_enqueued(queue, "mail")
    assert [j.id for j in jobs] == [a, b]  # oldest first
    (only,) = await assert_enqueued(queue, "mail", payload={"to": "a"})
    assert only.id == a
    await assert_enqueued(queue, "mail", tenant="t1", tags=["x", "y"], priority=2, count=1)
    await assert_enqueued(queue, "mail", count=2)
    await assert_enqueued(queue, "mail", state="queued", count=2)
    await assert_enqueued(queue, "nothing", count=0)

    with pytest.raises(AssertionError):
        await assert_enqueued(queue, "mail", payload={"to": "z"})
    with pytest.raises(AssertionError):
        await assert_enqueued(queue, "mail", count=3)
    with pytest.raises(AssertionError):
        await assert_enqueued(queue, "mail", tenant="t3")
    with pytest.raises(AssertionError):
        await assert_enqueued(queue, "nothing")
    with pytest.raises(AssertionError):
        await assert_enqueued(queue, "mail", state="completed")


# -- ManualClock ----------------------------------------------------------------------------------
def test_manual_clock_moves_only_when_told() -> None:
    start = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    clock = ManualClock(start)
    assert clock.now() == start.timestamp()
    assert clock.datetime == start
    time.sleep(0.01)
    assert clock.now() == start.timestamp()
    clock.advance(1.5)
    assert clock.now() == start.timestamp() + 1.5
    clock.advance(timedelta(minutes=1))
    assert clock.datetime == start + timedelta(seconds=61.5)
    clock.advance(-61.5)  # clocks do step back
    assert clock.datetime == start
    clock.set(start + timedelta(days=1))
    assert clock.datetime == start + timedelta(days=1)
    clock.set(1_000_000.25)
    assert clock.now() == 1_000_000.25
    assert clock.datetime.tzinfo is not None


def test_manual_clock_defaults_to_now_and_takes_epoch_seconds() -> None:
    before = time.time()
    clock = ManualClock()
    assert before <= clock.now() <= time.time()
    assert ManualClock(12345.5).now() == 12345.5


async def test_manual_clock_drives_scheduled_jobs(cq: conveyor.Queue, clock: ManualClock) -> None:
    ran: list[int] = []

    @cq.job("tick")
    async def tick(payload: int, ctx: conveyor.Context) -> None:
        ran.append(payload)

    await tick.enqueue(1, delay=timedelta(hours=1))
    await tick.enqueue(2, run_at=clock.datetime + timedelta(hours=2))
    assert await drain(cq) == 0
    clock.advance(timedelta(hours=1))
    assert await drain(cq) == 1 and ran == [1]
    clock.advance(timedelta(hours=1))
    assert await drain(cq) == 1 and ran == [1, 2]

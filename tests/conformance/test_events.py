"""Events: queue.on() callbacks (sync and async) and the cross-process queue.events()."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

import conveyor
from conveyor import Backoff, JobState
from conveyor.testing import drain
from tests.conformance._util import running, wait_state
from tests.conftest import wait_for


async def test_sync_and_async_callbacks_get_lifecycle_events(queue: conveyor.Queue) -> None:
    sync_seen: list[conveyor.Event] = []
    async_seen: list[conveyor.Event] = []

    async def on_async(event: conveyor.Event) -> None:
        await asyncio.sleep(0)
        async_seen.append(event)

    for kind in ("enqueued", "started", "progress", "completed"):
        queue.on(kind, sync_seen.append)
        queue.on(kind, on_async)

    @queue.job("observed")
    async def observed(payload: object, ctx: conveyor.Context) -> dict:
        await ctx.set_progress(50)
        return {"ok": True}

    job_id = await observed.enqueue(tenant="acme")
    await queue.worker().run_once()
    await wait_for(lambda: len(async_seen) == 4, 5)
    assert [e.type for e in sync_seen] == ["enqueued", "started", "progress", "completed"]
    assert sorted(e.type for e in async_seen) == sorted(
        ["enqueued", "started", "progress", "completed"]
    )
    for e in sync_seen:
        assert (e.job_id, e.job_name, e.tenant) == (job_id, "observed", "acme")
        assert isinstance(e.at, datetime) and e.at.tzinfo is not None
    assert [e.attempt for e in sync_seen] == [0, 1, 1, 1]
    assert sync_seen[2].data == {"progress": 50}
    assert sync_seen[3].data.get("result") == {"ok": True}


async def test_failure_events_carry_the_error(queue: conveyor.Queue) -> None:
    seen: list[conveyor.Event] = []
    queue.on("retrying", seen.append)
    queue.on("failed", seen.append)

    @queue.job("fails", attempts=2, backoff=Backoff.fixed(0))
    async def fails(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError(f"bad {ctx.attempt}")

    job_id = await fails.enqueue()
    await drain(queue)
    assert [(e.type, e.attempt, e.job_id) for e in seen] == [
        ("retrying", 1, job_id),
        ("failed", 2, job_id),
    ]
    assert seen[1].data["error"]["message"] == "bad 2"
    assert seen[1].data["error"]["type"] == "ValueError"


async def test_wildcard_and_off(queue: conveyor.Queue) -> None:
    seen: list[str] = []

    def cb(event: conveyor.Event) -> None:
        seen.append(event.type)

    queue.on("*", cb)
    await queue.enqueue("x")
    queue.off("*", cb)
    await queue.enqueue("x")
    assert seen == ["enqueued"]


async def test_a_failing_callback_disturbs_nothing(
    queue: conveyor.Queue, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: conveyor.Event) -> None:
        raise RuntimeError("callback bug")

    async def broken_async(event: conveyor.Event) -> None:
        raise RuntimeError("async callback bug")

    queue.on("*", broken)
    queue.on("*", broken_async)

    @queue.job("fine")
    async def fine(payload: object, ctx: conveyor.Context) -> str:
        return "fine"

    job_id = await fine.enqueue()
    assert await queue.worker().run_once() == 1
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == "fine"
    await wait_for(
        lambda: "async callback bug" in caplog.text or "async event callback" in caplog.text, 5
    )


async def test_on_refuses_unknown_event_types(queue: conveyor.Queue) -> None:
    with pytest.raises(conveyor.ValidationError):
        queue.on("finished", lambda e: None)
    with pytest.raises(conveyor.ValidationError):
        queue.on("completed", "not callable")  # type: ignore[arg-type]


async def test_events_stream_across_processes(store, queue: conveyor.Queue) -> None:
    """queue.events() yields events stored by another process (here: another Queue on the
    same store running the worker)."""
    # "ping" is a job no process handles (channel "nobody"): not a typo, so not strict
    other = store.queue(poll_interval=0.05, sweep_interval=0.2, strict_names=False)

    @other.job("remote")
    async def remote(payload: object, ctx: conveyor.Context) -> str:
        await ctx.set_progress(30)
        return "from afar"

    received: list[conveyor.Event] = []

    async def consume() -> None:
        async for event in queue.events():
            received.append(event)

    consumer = asyncio.create_task(consume())
    try:
        # The stream starts "now": ping until the consumer is provably listening.
        async def listening() -> bool:
            await other.enqueue("ping", None, channel="nobody")
            await asyncio.sleep(0.05)
            return bool(received)

        await wait_for(listening, 10)
        async with running(other.worker(channels=["default"])):
            job_id = await other.enqueue("remote", {"n": 1}, tenant="t9")
            await wait_state(queue, job_id, JobState.COMPLETED)

            def complete() -> bool:
                return "completed" in [e.type for e in received if e.job_id == job_id]

            await wait_for(complete, 10)
    finally:
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
    mine = [e for e in received if e.job_id == job_id]
    assert [e.type for e in mine] == ["enqueued", "started", "progress", "completed"]
    assert all(e.job_name == "remote" and e.tenant == "t9" for e in mine)
    assert [e.attempt for e in mine] == [0, 1, 1, 1]
    # Only events from after the stream started: no history replayed before the first ping.
    assert received[0].type == "enqueued" and received[0].job_name == "ping"


async def test_two_event_streams_each_get_everything(store, queue: conveyor.Queue) -> None:
    a: list[conveyor.Event] = []
    b: list[conveyor.Event] = []
    q2 = store.queue()

    async def consume(q: conveyor.Queue, into: list[conveyor.Event]) -> None:
        async for event in q.events():
            into.append(event)

    tasks = [asyncio.create_task(consume(queue, a)), asyncio.create_task(consume(q2, b))]
    try:

        async def both_listening() -> bool:
            await queue.enqueue("ping")
            await asyncio.sleep(0.05)
            return bool(a) and bool(b)

        await wait_for(both_listening, 10)
        marker = await queue.enqueue("marker")
        await wait_for(
            lambda: any(e.job_id == marker for e in a) and any(e.job_id == marker for e in b), 10
        )
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_event_stream_misses_and_repeats_nothing_under_load(
    store, queue: conveyor.Queue
) -> None:
    workers = [store.queue(poll_interval=0.05, sweep_interval=0.2) for _ in range(2)]
    for w in workers:

        @w.job("load")
        async def load(payload: int, ctx: conveyor.Context) -> int:
            await asyncio.sleep(0.005 * (payload % 3))
            return payload

    received: list[conveyor.Event] = []

    async def consume() -> None:
        async for event in queue.events(poll_timeout=0.2):
            received.append(event)

    consumer = asyncio.create_task(consume())
    try:

        async def listening() -> bool:
            await queue.enqueue("ping", None, channel="nobody")
            await asyncio.sleep(0.05)
            return bool(received)

        await wait_for(listening, 10)
        ids = await queue.enqueue_many([conveyor.JobSpec("load", i) for i in range(40)])
        async with (
            running(workers[0].worker(concurrency=8)),
            running(workers[1].worker(concurrency=8)),
        ):

            def all_completed() -> bool:
                done = {e.job_id for e in received if e.type == "completed"}
                return set(ids) <= done

            await wait_for(all_completed, 30)
    finally:
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
    for job_id in ids:
        types = [e.type for e in received if e.job_id == job_id]
        assert types == ["enqueued", "started", "completed"], (job_id, types)

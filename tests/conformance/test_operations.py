"""What people operating a queue read and do (DESIGN.md "Operating it", "The operations
surface"): the worker registry, channels and their pause state, throughput over time,
deleting jobs, bulk retry/delete by filter, name-prefix search, and resuming the event
stream after an event id."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest

import conveyor
from conveyor import JobState
from conveyor.testing import ManualClock
from tests.conformance._util import running, wait_state
from tests.conftest import wait_for


async def test_a_running_worker_is_registered_until_it_stops(queue: conveyor.Queue) -> None:
    gate = asyncio.Event()

    @queue.job("hold")
    async def hold(payload: Any, ctx: conveyor.Context) -> None:
        await gate.wait()

    job_id = await hold.enqueue()
    worker = queue.worker(channels=["default"], concurrency=3)
    async with running(worker):
        await wait_state(queue, job_id, JobState.RUNNING)

        async def listed_with_job() -> list[conveyor.WorkerInfo] | None:
            workers = await queue.workers()
            return workers if workers and workers[0].running == (job_id,) else None

        [info] = await wait_for(listed_with_job, 10)
        assert (info.id, info.host, info.pid) == (worker.id, socket.gethostname(), os.getpid())
        assert (info.channels, info.concurrency) == (("default",), 3)
        assert info.started_at <= info.last_seen
        gate.set()
        await wait_state(queue, job_id, JobState.COMPLETED)
    assert await queue.workers() == []  # a clean stop says goodbye


async def test_a_worker_that_vanished_drops_out_with_its_lease(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    backend = await cq.engine.ready()
    from conveyor.backends.base import WorkerRecord

    now = clock.now()
    await backend.register_worker(
        WorkerRecord("ghost", "h", 1, None, 1, (), now, now, now + cq.settings.lease)
    )
    assert [w.id for w in await cq.workers()] == ["ghost"]
    clock.advance(cq.settings.lease)
    assert await cq.workers() == []


async def test_channels_list_counts_and_pause_state(cq: conveyor.Queue, clock: ManualClock) -> None:
    await cq.enqueue("a", {}, channel="emails")
    await cq.enqueue("b", {}, channel="emails", delay=60)
    await cq.enqueue("c", {}, channel="reports")
    await cq.pause("reports")
    await cq.pause("idle")  # paused before it has any job
    clock.advance(5)
    channels = {c.name: c for c in await cq.channels()}
    assert set(channels) == {"emails", "reports", "idle"}
    emails = channels["emails"]
    assert (emails.counts["queued"], emails.counts["scheduled"], emails.paused) == (1, 1, False)
    assert emails.oldest_queued_at is not None
    assert (channels["reports"].paused, channels["idle"].paused) == (True, True)
    assert sum(channels["idle"].counts.values()) == 0
    state = await cq.pause_state()
    assert (state.everything, state.channels) == (False, ("idle", "reports"))
    await cq.pause()
    assert all(c.paused for c in await cq.channels())
    await cq.resume()
    assert not any(c.paused for c in await cq.channels())


async def test_throughput_counts_finished_jobs_per_minute(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    @cq.job("tp", attempts=1)
    async def tp(payload: Any, ctx: conveyor.Context) -> None:
        if payload == "fail":
            raise RuntimeError("no")

    for outcome in ("ok", "ok", "fail"):
        await tp.enqueue(outcome)
    await cq.worker().run_once()
    clock.advance(120)
    await tp.enqueue("ok")
    await cq.worker().run_once()
    points = await cq.throughput(window="5m", bucket="1m")
    assert len(points) == 5
    assert [p.start for p in points] == sorted(p.start for p in points)
    assert (points[-1].completed, points[-1].failed) == (1, 0)
    assert (points[-3].completed, points[-3].failed) == (2, 1)
    assert sum(p.completed + p.failed + p.cancelled for p in points) == 4
    with pytest.raises(conveyor.ValidationError):
        await cq.throughput(window="7 days")


async def test_delete_removes_a_job_unless_it_is_running(cq: conveyor.Queue) -> None:
    gone = await cq.enqueue("x", {})
    assert await cq.delete(gone) is True
    assert await cq.get_job(gone) is None
    assert await cq.delete(gone) is False
    backend = await cq.engine.ready()
    from conveyor.backends.base import ClaimParams

    busy = await cq.enqueue("y", {})
    now = cq.clock.now()
    await backend.claim(
        ClaimParams(worker_id="w", token="t", limit=1, now=now, lease_expires_at=now + 30)
    )
    with pytest.raises(conveyor.InvalidStateError, match="cancel it first"):
        await cq.delete(busy)
    assert (await cq.get_job(busy)) is not None


async def test_bulk_retry_and_delete_change_exactly_the_filtered_jobs(cq: conveyor.Queue) -> None:
    @cq.job("report.daily")
    async def daily(payload: Any, ctx: conveyor.Context) -> None:
        raise conveyor.Fatal("broken")

    @cq.job("report.weekly")
    async def weekly(payload: Any, ctx: conveyor.Context) -> None:
        raise conveyor.Fatal("broken")

    @cq.job("other")
    async def other(payload: Any, ctx: conveyor.Context) -> None:
        raise conveyor.Fatal("broken")

    daily_ids = [await daily.enqueue(i) for i in range(3)]
    weekly_ids = [await weekly.enqueue(i) for i in range(2)]
    other_id = await other.enqueue()
    await cq.worker().run_once()
    assert await cq.retry_jobs(state="failed", name="report.daily") == 3
    for job_id in daily_ids:
        assert (await cq.get_job(job_id)).state is JobState.QUEUED  # type: ignore[union-attr]
    assert (await cq.get_job(other_id)).state is JobState.FAILED  # type: ignore[union-attr]
    listed = await cq.list_jobs(name_prefix="report.")
    assert sorted(j.id for j in listed) == sorted(daily_ids + weekly_ids)
    assert await cq.delete_jobs(state="failed", name_prefix="report.") == 2
    for job_id in weekly_ids:
        assert await cq.get_job(job_id) is None
    assert (await cq.get_job(other_id)) is not None
    assert len(await cq.list_jobs()) == 4


async def test_events_resume_after_an_event_id(queue: conveyor.Queue) -> None:
    seen: list[conveyor.Event] = []

    async def reader() -> None:
        async for event in queue.events(poll_timeout=0.2):
            if event.type == "enqueued":
                seen.append(event)

    task = asyncio.create_task(reader())
    try:
        # The stream starts at "now" once it runs: enqueue markers until it sees one.
        async def opened() -> bool:
            marker = await queue.enqueue("marker", {})
            try:
                await wait_for(lambda: any(e.job_id == marker for e in seen), 0.5)
            except AssertionError:
                return False
            return True

        await wait_for(opened, 20)
        ids = [await queue.enqueue("ev", {"n": i}) for i in range(3)]
        await wait_for(lambda: [e.job_id for e in seen][-3:] == ids, 20)
    finally:
        task.cancel()
    mine = seen[-3:]
    assert all(e.id for e in mine)
    again: list[int] = []
    async for event in queue.events(since=mine[0].id, poll_timeout=0.2):
        if event.type == "enqueued":
            again.append(event.job_id)
        if len(again) == 2:
            break
    assert again == ids[1:]
    with pytest.raises(conveyor.ValidationError):
        await anext(queue.events(since=""))

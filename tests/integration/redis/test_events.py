"""The Redis backend against a real Redis: the event stream and the wake-ups."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from conveyor.backends.base import EventPage, EventRead, PromoteResult
from conveyor.backends.redis.backend import RedisBackend
from conveyor.errors import BackendError
from conveyor.models import Event, JobState
from tests.integration.redis.helpers import (
    NOW,
    claim_ids,
    claim_params,
    enqueue,
    new_job,
    promote,
)


def read(after: str | None, limit: int = 100, timeout: float = 0) -> EventRead:
    return EventRead(after=after, limit=limit, timeout=timeout)


def unpack(page: EventPage) -> tuple[list[Event], str]:
    return page.events, page.cursor


# -- the event stream ----------------------------------------------------------------------


async def test_read_events_from_the_stream(make_backend: Any) -> None:
    reader: RedisBackend = await make_backend()
    writer: RedisBackend = await make_backend()
    events, cursor = unpack(await reader.read_events(read(None)))
    assert events == []
    [job_id] = await enqueue(writer, new_job("e", tenant="t"))
    events, cursor = unpack(await reader.read_events(read(cursor)))
    assert [(e.type, e.job_id, e.job_name, e.tenant) for e in events] == [
        ("enqueued", job_id, "e", "t")
    ]
    # a blocking read returns as soon as another connection writes an event
    started = time.monotonic()
    pending = reader.read_events(read(cursor, timeout=10.0))
    task = asyncio.ensure_future(pending)
    await asyncio.sleep(0.05)
    await writer.claim(claim_params())
    events, cursor = unpack(await asyncio.wait_for(task, 5))
    assert [e.type for e in events] == ["started"] and time.monotonic() - started < 5
    assert await reader.read_events(read(cursor, timeout=0.05)) == EventPage([], cursor)


async def test_read_events_with_limit_zero_only_moves_the_cursor(backend: RedisBackend) -> None:
    start = await backend.read_events(read(None, limit=0, timeout=5))
    assert start.events == []
    await enqueue(backend, new_job("before"))
    # limit 0 never waits and hands out nothing: the cursor stays where it was
    started = time.monotonic()
    assert await backend.read_events(read(start.cursor, limit=0, timeout=5)) == start
    assert time.monotonic() - started < 1
    # from None, limit 0 gives the current end: only later events follow it
    end = await backend.read_events(read(None, limit=0, timeout=5))
    assert end.events == [] and time.monotonic() - started < 2
    [after] = await enqueue(backend, new_job("after"))
    assert [e.job_id for e in (await backend.read_events(read(end.cursor))).events] == [after]
    assert len((await backend.read_events(read(start.cursor))).events) == 2
    with pytest.raises(BackendError, match="not an event cursor"):
        await backend.read_events(read("0-0/x", limit=0))


async def test_read_events_pages_through_big_batches(backend: RedisBackend) -> None:
    cursor = (await backend.read_events(read(None, limit=10))).cursor
    ids = await enqueue(backend, *(new_job(f"n{i}") for i in range(120)))  # one script call
    seen: list[int] = []
    for _ in range(10):
        events, cursor = unpack(await backend.read_events(read(cursor, limit=30)))
        assert len(events) <= 30
        seen += [e.job_id for e in events]
        if not events:
            break
    assert seen == ids
    assert await backend.read_events(read(cursor, limit=30)) == EventPage([], cursor)


# -- wake-ups ------------------------------------------------------------------------------


async def test_wait_for_work_wakes_on_enqueue_from_another_connection(make_backend: Any) -> None:
    worker: RedisBackend = await make_backend()
    producer: RedisBackend = await make_backend()
    await worker.claim(claim_params(channels=("emails",)))  # this process serves "emails"
    await worker.wait_for_work(0.01)  # consume any stale marker
    loop = asyncio.get_running_loop()

    waiting = asyncio.ensure_future(worker.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await enqueue(producer, new_job(channel="texts"))  # another channel: no wake-up
    await asyncio.sleep(0.2)
    assert not waiting.done()
    started = loop.time()
    await enqueue(producer, new_job(channel="emails"))
    await asyncio.wait_for(waiting, 5)
    assert loop.time() - started < 2


async def test_promotion_wakes_idle_workers_elsewhere(make_backend: Any) -> None:
    worker: RedisBackend = await make_backend()
    other: RedisBackend = await make_backend()
    [job_id] = await enqueue(other, new_job(state=JobState.SCHEDULED, run_at=NOW + 5))
    await worker.wait_for_work(0.01)  # consume any stale marker
    waiting = asyncio.ensure_future(worker.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert await other.promote_due(promote(NOW + 5)) == PromoteResult(1, None)
    await asyncio.wait_for(waiting, 5)
    assert await claim_ids(worker, now=NOW + 5) == [job_id]


async def test_resuming_a_channel_wakes_its_workers(make_backend: Any) -> None:
    worker: RedisBackend = await make_backend()
    admin: RedisBackend = await make_backend()
    await admin.set_paused("*", True)
    [job_id] = await enqueue(admin, new_job(channel="*"))
    assert await claim_ids(worker, channels=("*",)) == []  # this process serves "*"
    await worker.wait_for_work(0.01)  # consume the enqueue's marker
    waiting = asyncio.ensure_future(worker.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await admin.set_paused("*", False)
    await asyncio.wait_for(waiting, 5)
    assert await claim_ids(worker, channels=("*",)) == [job_id]


async def test_wake_from_another_thread_and_times_out(backend: RedisBackend) -> None:
    loop = asyncio.get_running_loop()
    await backend.wait_for_work(0.01)
    started = loop.time()
    await backend.wait_for_work(0.3)  # nothing happens: returns after the timeout
    assert 0.25 <= loop.time() - started < 2
    timer = threading.Timer(0.2, backend.wake)
    timer.start()
    started = loop.time()
    await asyncio.wait_for(backend.wait_for_work(30), 5)
    assert loop.time() - started < 2
    # the blocking connection still works after being unblocked
    await enqueue(backend, new_job())
    await asyncio.wait_for(backend.wait_for_work(30), 5)
    # concurrent waiters in one process share the one blocking pop
    a = asyncio.ensure_future(backend.wait_for_work(30))
    b = asyncio.ensure_future(backend.wait_for_work(30))
    await asyncio.sleep(0.1)
    backend.wake()
    await asyncio.wait_for(asyncio.gather(a, b), 5)

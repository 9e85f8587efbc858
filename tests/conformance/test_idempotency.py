"""Idempotency keys: the first job's id comes back, scoped by tenant, also under concurrent
enqueues from many processes, until that job is cleaned."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import conveyor
from conveyor import JobSpec, JobState
from tests.conformance._util import total


async def test_same_key_returns_the_first_id_and_creates_nothing(queue: conveyor.Queue) -> None:
    first = await queue.enqueue("charge", {"amount": 10}, idempotency_key="order-1")
    again = await queue.enqueue("charge", {"amount": 99}, idempotency_key="order-1", priority=5)
    assert again == first
    assert await total(queue) == 1
    job = await queue.get_job(first)
    assert job is not None and job.payload == {"amount": 10} and job.priority == 0
    assert [e.type for e in await queue.get_job_events(first)] == ["enqueued"]
    assert await queue.enqueue("charge", {"amount": 10}, idempotency_key="order-2") != first


async def test_keys_are_scoped_by_tenant(queue: conveyor.Queue) -> None:
    none = await queue.enqueue("k", None, idempotency_key="same")
    a = await queue.enqueue("k", None, idempotency_key="same", tenant="a")
    b = await queue.enqueue("k", None, idempotency_key="same", tenant="b")
    assert len({none, a, b}) == 3
    assert await queue.enqueue("k", None, idempotency_key="same") == none
    assert await queue.enqueue("k", None, idempotency_key="same", tenant="a") == a
    assert await queue.enqueue("k", None, idempotency_key="same", tenant="b") == b
    assert await total(queue) == 3


async def test_the_key_holds_across_job_names(queue: conveyor.Queue) -> None:
    first = await queue.enqueue("one-name", None, idempotency_key="k")
    assert await queue.enqueue("other-name", None, idempotency_key="k") == first


async def test_concurrent_enqueues_from_many_processes_yield_one_id(store) -> None:
    queues = [store.queue() for _ in range(20)]
    await queues[0].migrate()
    results = await asyncio.gather(
        *(q.enqueue("race", {"i": i}, idempotency_key="only-once") for i, q in enumerate(queues))
    )
    assert len(set(results)) == 1
    assert await total(queues[0]) == 1
    results = await asyncio.gather(
        *(
            q.enqueue("race", None, idempotency_key="per-tenant", tenant=f"t{i % 2}")
            for i, q in enumerate(queues)
        )
    )
    assert len(set(results)) == 2
    assert await total(queues[0]) == 3


async def test_concurrent_sync_enqueues_from_threads_yield_one_id(queue: conveyor.Queue) -> None:
    results = await asyncio.gather(
        *(asyncio.to_thread(queue.enqueue_sync, "race", i, idempotency_key="k") for i in range(10))
    )
    assert len(set(results)) == 1
    assert await total(queue) == 1


async def test_key_stays_taken_after_completion_until_cleaned(queue: conveyor.Queue) -> None:
    @queue.job("keyed")
    async def keyed(payload: object, ctx: conveyor.Context) -> object:
        return payload

    first = await keyed.enqueue(1, idempotency_key="k")
    await queue.worker().run_once()
    assert (await queue.get_job(first)).state is JobState.COMPLETED  # type: ignore[union-attr]
    assert await keyed.enqueue(2, idempotency_key="k") == first
    assert await queue.clean(older_than=timedelta(0), state="completed") == 1
    assert await queue.get_job(first) is None
    second = await keyed.enqueue(3, idempotency_key="k")
    assert second != first
    job = await queue.get_job(second)
    assert job is not None and job.payload == 3 and job.state is JobState.QUEUED


async def test_key_is_free_again_after_remove_on_complete(queue: conveyor.Queue) -> None:
    @queue.job("removed")
    async def removed(payload: object, ctx: conveyor.Context) -> None:
        return None

    first = await removed.enqueue(None, idempotency_key="k", remove_on_complete=True)
    assert await removed.enqueue(None, idempotency_key="k") == first  # still there
    await queue.worker().run_once()
    assert await queue.get_job(first) is None
    assert await removed.enqueue(None, idempotency_key="k") != first


async def test_key_holds_for_failed_and_cancelled_jobs(queue: conveyor.Queue) -> None:
    @queue.job("fails")
    async def fails(payload: object, ctx: conveyor.Context) -> None:
        raise ValueError("no")

    failed = await fails.enqueue(None, idempotency_key="f")
    cancelled = await fails.enqueue(None, idempotency_key="c", delay=60)
    await queue.cancel(cancelled)
    await queue.worker().run_once()
    assert await fails.enqueue(None, idempotency_key="f") == failed
    assert await fails.enqueue(None, idempotency_key="c") == cancelled
    assert await queue.clean(older_than=0, state="failed") == 1
    assert await queue.clean(older_than=0, state="cancelled") == 1
    assert await fails.enqueue(None, idempotency_key="f") != failed
    assert await fails.enqueue(None, idempotency_key="c") != cancelled


async def test_enqueue_many_with_existing_keys(queue: conveyor.Queue) -> None:
    existing = await queue.enqueue("m", "old", idempotency_key="k1")
    ids = await queue.enqueue_many(
        [
            JobSpec("m", "new1", idempotency_key="k1"),
            JobSpec("m", "new2", idempotency_key="k2"),
            JobSpec("m", "new3"),
        ]
    )
    assert ids[0] == existing
    assert len(set(ids)) == 3
    assert await total(queue) == 3
    assert (await queue.get_job(existing)).payload == "old"  # type: ignore[union-attr]

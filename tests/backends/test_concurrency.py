"""Several instances on one store at once (as several processes would be): a claim takes a
job once, a group runs one job at a time, an idempotency key makes one job, a lock has
one owner."""

from __future__ import annotations

import asyncio

from conveyor.backends.base import Backend, EnqueueParams, LockParams
from tests.backends.conftest import Store
from tests.backends.helpers import NOW, claim_ids, enqueue, new_job

INSTANCES = 4


async def instances(backend: Backend, store: Store) -> list[Backend]:
    return [backend, *[await store.connected() for _ in range(INSTANCES - 1)]]


async def test_concurrent_claims_take_each_job_once(backend: Backend, store: Store) -> None:
    ids = await enqueue(backend, *(new_job() for _ in range(30)))
    workers = await instances(backend, store)

    async def drain(worker: Backend, n: int) -> list[int]:
        got: list[int] = []
        while batch := await claim_ids(worker, token=f"w{n}", limit=3):
            got += batch
        return got

    claimed = await asyncio.gather(*(drain(w, n) for n, w in enumerate(workers)))
    flat = [job_id for batch in claimed for job_id in batch]
    assert sorted(flat) == ids  # every job, each once


async def test_concurrent_claims_run_one_job_of_a_group(backend: Backend, store: Store) -> None:
    grouped = await enqueue(backend, *(new_job(group="g") for _ in range(6)))
    workers = await instances(backend, store)
    claimed = await asyncio.gather(
        *(claim_ids(w, token=f"w{n}", limit=10) for n, w in enumerate(workers))
    )
    assert [i for batch in claimed for i in batch] == [grouped[0]]


async def test_concurrent_enqueues_of_one_key_make_one_job(backend: Backend, store: Store) -> None:
    producers = await instances(backend, store)
    params = EnqueueParams([new_job(idempotency_key="once", tenant="t")], NOW)
    results = await asyncio.gather(*(p.enqueue_many(params) for p in producers for _ in range(3)))
    flat = [r for batch in results for r in batch]
    assert len({r.id for r in flat}) == 1
    assert [r.created for r in flat].count(True) == 1
    assert sum((await backend.counts(None)).values()) == 1


async def test_concurrent_lock_takers_get_one_owner(backend: Backend, store: Store) -> None:
    takers = await instances(backend, store)
    won = await asyncio.gather(
        *(t.acquire_lock(LockParams("sweep", f"o{n}", 10, NOW)) for n, t in enumerate(takers))
    )
    assert won.count(True) == 1

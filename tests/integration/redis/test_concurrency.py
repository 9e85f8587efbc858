"""Many claimers and producers at once: no job is claimed twice, one key gives one id."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from typing import Any

from conveyor.backends.redis.backend import RedisBackend
from tests.integration.redis.helpers import (
    claim_all_process,
    claim_params,
    enqueue,
    enqueue_same_key_process,
    new_job,
)


def _run_children(target: Any, n: int, args: tuple[Any, ...], extra: Any = None) -> list[Any]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=target, args=(*args, barrier, results, *(extra(i) if extra else ())))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    return out


async def test_concurrent_claimers_never_double_claim(make_backend: Any) -> None:
    producer: RedisBackend = await make_backend()
    ids = await enqueue(
        producer, *(new_job(group=None if i % 3 else f"g{i % 7}") for i in range(600))
    )
    claimers: list[RedisBackend] = [await make_backend() for _ in range(6)]
    claimed: list[int] = []

    async def drain(b: RedisBackend, token: str) -> None:
        while True:
            jobs = await b.claim(claim_params(token=token, limit=7))
            if not jobs:
                return
            claimed.extend(j.id for j in jobs)

    await asyncio.gather(*(drain(b, f"t{i}") for i, b in enumerate(claimers)))
    dupes = [i for i, n in Counter(claimed).items() if n > 1]
    assert not dupes
    # group members wait for their group, everything else was claimed
    assert set(claimed) <= set(ids)
    assert len(claimed) == len(ids) - sum(1 for i in range(600) if i % 3 == 0) + 7
    assert (await producer.counts(None))["running"] == len(claimed)


async def test_claimers_in_several_processes(
    make_backend: Any, redis_url: str, prefix: str
) -> None:
    producer: RedisBackend = await make_backend()
    ids = await enqueue(producer, *(new_job() for _ in range(800)))
    batches = await asyncio.to_thread(
        _run_children, claim_all_process, 4, (redis_url, prefix), lambda i: (f"p{i}",)
    )
    claimed = [i for batch in batches for i in batch]
    assert sorted(claimed) == sorted(ids)  # every job once, none twice


async def test_idempotency_under_concurrent_processes(
    make_backend: Any, redis_url: str, prefix: str
) -> None:
    backend: RedisBackend = await make_backend()
    results = await asyncio.to_thread(
        _run_children, enqueue_same_key_process, 4, (redis_url, prefix)
    )
    pairs = [pair for result in results for pair in result]
    assert len({job_id for job_id, _ in pairs}) == 1
    assert sum(created for _, created in pairs) == 1
    assert (await backend.counts(None))["queued"] == 1

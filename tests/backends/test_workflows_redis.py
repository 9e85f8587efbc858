"""Workflows on Redis only: where the edges and batch rows live and when they go, that a
plain job pays nothing for them, cascades deeper than any recursion, and the corners of
exactly-once (retries after the fact, deletes, remove_on_complete). The shared contract is
in ``test_workflows.py``."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from conveyor.backends.base import (
    Backend,
    EnqueueParams,
    JobFilter,
    NewBatch,
    PruneParams,
    ResumeParams,
)
from conveyor.backends.redis.keys import Keys
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import (
    LEASE,
    NOW,
    claim_ids,
    claim_params,
    enqueue,
    error,
    event_types,
    finish,
    get,
    new_job,
    outcome,
)


def keys_of(store: Store) -> Keys:
    return Keys(store.token)


async def run_one(backend: Backend, job_id: int, token: str, **kw: object) -> None:
    job = await get(backend, job_id)
    assert await claim_ids(backend, token=token, include=(job.name,), limit=1) == [job_id]
    await finish(backend, job_id, token, **kw)


async def workflow_keys(client: aioredis.Redis, store: Store) -> set[str]:
    base = keys_of(store).base
    found: set[str] = set()
    for infix in ("deps:", "dnts:", "batch:"):
        found |= {k async for k in client.scan_iter(match=f"{base}{infix}*")}
    return found


async def test_plain_jobs_carry_no_workflow_state(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    a, b = await enqueue(backend, new_job("plain"), new_job("plain"))
    assert await claim_ids(backend, token="t") == [a, b]
    await finish(backend, a, "t")
    await finish(backend, b, "t", state=JobState.FAILED, error=error())
    assert await workflow_keys(client, store) == set()
    fields = await client.hkeys(keys_of(store).job(a))
    assert not {"has_deps", "has_dependents", "batch_id", "batch_counted", "dep_wait"} & set(fields)


async def test_a_dependent_waits_outside_the_wait_set(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    keys = keys_of(store)
    [a] = await enqueue(backend, new_job("first"))
    [b] = await enqueue(backend, new_job("second", depends_on=(a,)))
    assert await client.zscore(keys.fixed("wait"), str(b)) is None
    assert await client.smembers(f"{keys.base}dnts:{a}") == {str(b)}
    assert await client.hget(keys.job(a), "has_dependents") == "1"
    assert await client.lrange(keys.deps(b), 0, -1) == [str(a)]
    # its run_at is long past: resume_due must not take it
    assert await backend.resume_due(ResumeParams(now=NOW + 10**6, limit=100)) == []
    assert (await backend.counts(None))["waiting"] == 1
    assert (await backend.counts("default"))["waiting"] == 1
    await run_one(backend, a, "ta")
    assert (await get(backend, b)).state == JobState.QUEUED
    assert (await backend.counts("default"))["waiting"] == 0
    # the resolved edge is gone from the dependency; the list stays for results
    assert not await client.exists(f"{keys.base}dnts:{a}")
    assert await client.hget(keys.job(a), "has_dependents") is None
    assert await backend.dependency_results(b) == {a: None}


async def test_a_dependent_due_later_becomes_scheduled(backend: Backend) -> None:
    [a] = await enqueue(backend, new_job("now"))
    [b] = await enqueue(backend, new_job("later", run_at=NOW + 3600, depends_on=(a,)))
    assert (await get(backend, b)).state == JobState.WAITING
    await run_one(backend, a, "ta")
    assert (await get(backend, b)).state == JobState.SCHEDULED


async def test_complete_and_claim_takes_the_dependent_it_released(backend: Backend) -> None:
    [a] = await enqueue(backend, new_job("step-1"))
    [b] = await enqueue(backend, new_job("step-2", depends_on=(a,)))
    assert await claim_ids(backend, token="t1") == [a]
    applied, claimed = await backend.complete_and_claim(
        [outcome(a, "t1")], claim_params(token="t2")
    )
    assert applied == [True] and [j.id for j in claimed] == [b]


async def test_a_deep_cascade_runs_in_one_script(backend: Backend) -> None:
    depth = 400
    jobs = [new_job("c0")] + [new_job(f"c{k}", depends_on=(-k,)) for k in range(1, depth)]
    ids = await enqueue(backend, *jobs)
    assert await backend.cancel(ids[0], NOW) == "cancelled"
    states = {(await get(backend, i)).state for i in ids}
    assert states == {JobState.CANCELLED}
    assert (await backend.counts(None))["cancelled"] == depth
    events = await backend.get_events(ids[-1])
    assert dict(events[-1].data) == {"reason": "dependency_failed", "dependency": ids[-2]}


async def test_a_retry_after_the_fact_resolves_nothing_twice(backend: Backend) -> None:
    [a, x] = await enqueue(backend, new_job("a"), new_job("x"))
    [b] = await enqueue(backend, new_job("b", depends_on=(a, x), on_dependency_failure="run"))
    await run_one(backend, a, "t1", state=JobState.FAILED, error=error())
    job = await get(backend, b)
    assert job.state == JobState.WAITING  # a counts as satisfied, x still runs
    assert (await backend.retry(a, NOW)).outcome == "retried"
    await run_one(backend, a, "t2", state=JobState.FAILED, error=error())
    assert (await get(backend, b)).state == JobState.WAITING  # a was not counted again
    await run_one(backend, x, "t3")
    assert (await get(backend, b)).state == JobState.QUEUED
    assert (await event_types(backend, b)).count("resumed") == 1


async def test_deleting_a_waiting_dependent_leaves_no_edge_behind(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    [a] = await enqueue(backend, new_job("dep"))
    [b] = await enqueue(backend, new_job("gone", depends_on=(a,)))
    await backend.delete_jobs([b], NOW)
    assert not await client.exists(f"{keys_of(store).base}dnts:{a}")
    assert not await client.exists(keys_of(store).deps(b))
    await run_one(backend, a, "ta")  # finds nobody to resolve
    assert (await backend.counts(None))["completed"] == 1


async def test_prune_and_delete_take_edges_and_batches_with_them(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    results = await backend.enqueue_many(
        EnqueueParams(
            [new_job("p1", batch_id="bp"), new_job("p2", batch_id="bp", depends_on=(-1,))],
            NOW,
            batch=NewBatch("bp", 2, new_job("pcb")),
        )
    )
    p1, p2 = (r.id for r in results)
    await run_one(backend, p1, "t1", result='{"v": 1}')
    await run_one(backend, p2, "t2")
    assert await backend.dependency_results(p2) == {p1: '{"v": 1}'}
    record = await backend.get_batch("bp")
    assert record is not None and record.state == "done" and record.completed == 2
    assert record.callback_job_id is not None
    await backend.prune(PruneParams(JobState.COMPLETED, NOW + 1, 100))  # members only
    assert await backend.get_batch("bp") is not None
    await backend.delete_jobs([record.callback_job_id], NOW)
    assert await backend.get_batch("bp") is None
    assert await workflow_keys(client, store) == set()


async def test_remove_on_complete_resolves_then_goes(backend: Backend) -> None:
    results = await backend.enqueue_many(
        EnqueueParams(
            [new_job("r1", batch_id="br", remove_on_complete=True)],
            NOW,
            batch=NewBatch("br", 1, new_job("rcb", remove_on_complete=True)),
        )
    )
    [r1] = [r.id for r in results]
    [after] = await enqueue(backend, new_job("after-r1", depends_on=(r1,)))
    await run_one(backend, r1, "t1", remove=True)
    assert await backend.get_job(r1) is None
    assert (await get(backend, after)).state == JobState.QUEUED
    record = await backend.get_batch("br")
    assert record is not None and record.callback_job_id is not None
    await run_one(backend, record.callback_job_id, "t2", remove=True)
    assert await backend.get_batch("br") is None


async def test_a_batch_counts_every_way_of_ending_once(backend: Backend) -> None:
    members = [new_job(f"bm{i}", batch_id="bx") for i in range(5)]
    cb = new_job("bcb", options='{"timeout": 5.0, "note": "kept \\u00e9/x"}')
    ids = [
        r.id
        for r in await backend.enqueue_many(
            EnqueueParams(members, NOW, batch=NewBatch("bx", 5, cb))
        )
    ]
    await run_one(backend, ids[0], "t0")
    await run_one(backend, ids[1], "t1", state=JobState.QUEUED, run_at=NOW, error=error())
    await run_one(backend, ids[1], "t1b", state=JobState.FAILED, error=error())
    assert await backend.cancel(ids[2], NOW) == "cancelled"
    await backend.delete_jobs([ids[3]], NOW)  # unfinished: counts as cancelled
    # a failed member retried after the fact is not counted twice
    assert (await backend.retry(ids[1], NOW)).outcome == "retried"
    await run_one(backend, ids[1], "t1c")
    record = await backend.get_batch("bx")
    assert record is not None
    assert (record.completed, record.failed, record.cancelled, record.state) == (1, 1, 2, "running")
    assert record.callback_job_id is None
    # a rescue that fails the last member
    assert await claim_ids(backend, token="t4", include=("bm4",)) == [ids[4]]
    rescue = outcome(
        ids[4],
        "t4",
        state=JobState.FAILED,
        at=NOW + LEASE,
        error=error(),
        expired_before=NOW + LEASE,
        stall=True,
    )
    assert await backend.complete_many([rescue]) == [True]
    record = await backend.get_batch("bx")
    assert record is not None
    assert (record.completed, record.failed, record.cancelled, record.state) == (1, 2, 2, "done")
    assert record.callback_job_id is not None
    job = await get(backend, record.callback_job_id)
    assert job.state == JobState.QUEUED and job.timeout == 5.0
    claimed = await backend.claim(claim_params(token="cb", include=("bcb",)))
    options = json.loads(claimed[0].options or "{}")
    assert options["note"] == "kept \u00e9/x"
    assert options["batch"] == {"id": "bx", "total": 5, "completed": 1, "failed": 2, "cancelled": 2}
    assert "enqueued" in await event_types(backend, record.callback_job_id)


async def test_a_batch_whose_members_are_cancelled_at_enqueue_is_done_at_once(
    backend: Backend,
) -> None:
    [bad] = await enqueue(backend, new_job("bad"))
    await run_one(backend, bad, "t", state=JobState.FAILED, error=error())
    results = await backend.enqueue_many(
        EnqueueParams(
            [new_job("doomed", batch_id="bd", depends_on=(bad,))],
            NOW,
            batch=NewBatch("bd", 1, new_job("dcb")),
        )
    )
    assert (await get(backend, results[0].id)).state == JobState.CANCELLED
    assert await event_types(backend, results[0].id) == ["enqueued", "cancelled"]
    record = await backend.get_batch("bd")
    assert record is not None and record.state == "done" and record.cancelled == 1
    assert record.callback_job_id is not None


async def test_cancel_jobs_cancels_dependency_waits_and_cascades(backend: Backend) -> None:
    [a] = await enqueue(backend, new_job("root"))
    [b] = await enqueue(backend, new_job("mid", depends_on=(a,)))
    [c] = await enqueue(backend, new_job("leaf", depends_on=(b,)))
    assert await backend.cancel_jobs(JobFilter(state=JobState.WAITING, name="mid"), NOW) == 1
    assert (await get(backend, c)).state == JobState.CANCELLED
    await run_one(backend, a, "ta")  # b is no longer waiting: nothing to resolve
    assert (await get(backend, b)).state == JobState.CANCELLED


async def test_a_bad_reference_in_the_call_refuses_it(backend: Backend) -> None:
    from conveyor.errors import ValidationError

    with pytest.raises(ValidationError, match="unknown dependency"):
        await backend.enqueue_many(EnqueueParams([new_job("x", depends_on=(-1,))], NOW))
    assert sum((await backend.counts(None)).values()) == 0


async def test_concurrent_enqueues_in_a_uniqueness_window_create_one_job(store: Store) -> None:
    backends = [await store.connected() for _ in range(4)]
    [first] = await backends[0].enqueue_many(
        EnqueueParams([new_job("u", idempotency_key="k", unique_for=10.0)], NOW)
    )

    async def again(b: Backend) -> tuple[int, bool]:
        [r] = await b.enqueue_many(
            EnqueueParams([new_job("u", idempotency_key="k", unique_for=10.0)], NOW + 20)
        )
        return r.id, r.created

    results = await asyncio.gather(*(again(b) for b in backends * 3))
    created = {i for i, c in results if c}
    assert len(created) == 1 and first.id not in created
    assert {i for i, _ in results} == created
    jobs = await backends[0].list_jobs(JobFilter(name="u"))
    assert sorted(j.idempotency_key or "" for j in jobs) == ["", "k"]

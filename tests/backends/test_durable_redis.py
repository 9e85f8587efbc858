"""Durable execution on Redis only: where waiting jobs live, what a removal leaves behind,
and the suspend racing ``complete_token`` across connections (the shared contract is in
``test_durable.py``)."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from conveyor.backends.base import (
    NEVER,
    Backend,
    NewToken,
    ResumeParams,
    StepSave,
    TokenCompletion,
)
from conveyor.backends.redis.keys import Keys
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import NOW, claim, enqueue, get, new_job, outcome


def wait_on(job_id: int, token_id: str | None, until: float = NEVER, lease: str = "tok"):  # type: ignore[no-untyped-def]
    return outcome(
        job_id,
        lease,
        state=JobState.WAITING,
        run_at=until,
        refund_attempt=True,
        wait_token=token_id,
        event="waiting",
    )


async def running_jobs(backend: Backend, n: int, lease: str = "tok") -> list[int]:
    await enqueue(backend, *(new_job("dur") for _ in range(n)))
    return [j.id for j in await claim(backend, token=lease, limit=n)]


async def test_waiting_jobs_live_in_their_own_index_only(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    keys = Keys(store.token)
    [job_id] = await running_jobs(backend, 1)
    assert await backend.complete_many([wait_on(job_id, None, NOW + 60)]) == [True]
    assert await client.zrange(keys.ready("default"), 0, -1) == []
    assert await client.zcard(keys.base + "queued_at:default") == 0
    assert await client.zcard(keys.fixed("due")) == 0
    assert await client.zrange(keys.fixed("wait"), 0, -1, withscores=True) == [
        (str(job_id), NOW + 60)
    ]
    await backend.resume_due(ResumeParams(NOW + 60, 10))
    assert await client.zcard(keys.fixed("wait")) == 0
    assert await client.zcard(keys.ready("default")) == 1


async def test_a_removed_job_leaves_no_step_or_token_keys(
    backend: Backend, store: Store, client: aioredis.Redis
) -> None:
    [job_id] = await running_jobs(backend, 1)
    for i in range(1500):  # more than one DEL chunk of tokens
        token = NewToken(f"tk-{i}", None, ("t",))
        assert await backend.save_step(StepSave(job_id, "tok", f"s{i}", json.dumps(i), NOW, token))
    assert len(await backend.list_tokens(job_id)) == 1500
    assert await backend.complete_many([outcome(job_id, remove=True)]) == [True]
    keys = Keys(store.token)
    left = [k async for k in client.scan_iter(match=keys.base + "*", count=1000)]
    assert not [k for k in left if ":tok" in k or ":steps:" in k or k == keys.job(job_id)]


async def test_a_taken_token_id_stores_neither_step_nor_token(backend: Backend) -> None:
    first, second = await running_jobs(backend, 2)
    assert await backend.save_step(StepSave(first, "tok", "a", "1", NOW, NewToken("same", None)))
    with pytest.raises(Exception, match="taken"):
        await backend.save_step(StepSave(second, "tok", "b", "1", NOW, NewToken("same", None)))
    assert await backend.load_steps(second) == []
    token = await backend.get_token("same")
    assert token is not None and token.job_id == first


async def test_suspends_racing_completions_never_leave_a_job_waiting(store: Store) -> None:
    """Each job suspends on its token while another connection completes that token: in
    whatever order the two scripts run, the job ends up queued, and resumed once."""
    suspender, completer = await store.connected(), await store.connected()
    ids = await running_jobs(suspender, 60)
    for job_id in ids:
        token = NewToken(f"race-{job_id}", None)
        assert await suspender.save_step(StepSave(job_id, "tok", "t", "1", NOW, token))

    async def suspend(job_id: int) -> None:
        assert await suspender.complete_many([wait_on(job_id, f"race-{job_id}")]) == [True]

    async def complete(job_id: int) -> None:
        done = await completer.complete_token(TokenCompletion(f"race-{job_id}", "1", NOW + 1))
        assert done.completed

    await asyncio.gather(*(f(i) for i in ids for f in (suspend, complete)))
    for job_id in ids:
        job = await get(suspender, job_id)
        assert (job.state, job.wait_token) == (JobState.QUEUED, None)
        events = [e.type for e in await suspender.get_events(job_id)]
        assert events.count("resumed") == 1

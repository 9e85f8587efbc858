"""PostgreSQL only: the suspend (an Outcome to ``waiting`` on a token) and
``complete_token`` never lose a completion, in either order, and never deadlock.

Each interleaving is forced: one side runs its statements by hand on an open
transaction of its own (holding its row locks) while the other runs through the
backend and has to wait for them."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from conveyor.backends.base import NewToken, Outcome, StepSave, TokenCompletion
from conveyor.backends.postgres import codec
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.sqlfiles import native
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import NOW, claim_ids, enqueue, event_types, get, new_job, ts
from tests.conftest import PG_URL

BLOCKED = 0.3  # seconds a call is given to show that it waits on a lock


@pytest.fixture
async def admin() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """Not autocommit, unlike the conftest's: these tests hold row locks in a transaction."""
    async with await psycopg.AsyncConnection.connect(PG_URL) as conn:
        yield conn


async def run(conn: psycopg.AsyncConnection[Any], query: str, args: dict[str, Any]) -> list[Any]:
    sql, names = native(query)
    cur = psycopg.AsyncRawCursor(conn)
    async with cur:
        await cur.execute(sql, [args[name] for name in names])
        return await cur.fetchall() if cur.pgresult and cur.pgresult.nfields else []


async def running_with_token(pg: PostgresBackend, token_id: str, token: str = "tok") -> int:
    name = f"race-{uuid.uuid4().hex[:8]}"
    [job_id] = await enqueue(pg, new_job(name))
    assert await claim_ids(pg, token=token, include=(name,)) == [job_id]
    save = StepSave(job_id, token, "conveyor:token:1", json.dumps({"id": token_id}), NOW,
                    NewToken(token_id, NOW + 3600))  # fmt: skip
    assert await pg.save_step(save)
    return job_id


def suspend(job_id: int, token_id: str, token: str = "tok") -> Outcome:
    return Outcome(job_id, token, JobState.WAITING, NOW, "waiting", run_at=NOW + 3600,
                   refund_attempt=True, wait_token=token_id, event_data='{"reason": "token"}')  # fmt: skip


async def still_blocked(task: asyncio.Task[Any]) -> None:
    await asyncio.sleep(BLOCKED)
    assert not task.done(), "it should wait for the other transaction's row lock"


async def test_a_completion_waits_for_a_suspend_in_flight_and_resumes_the_job(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    job_id = await running_with_token(pg, "tk-a")
    outcomes = [suspend(job_id, "tk-a")]
    async with admin.transaction():
        rows = await run(
            admin,
            pg.queries.complete(wait=True),
            codec.complete_args(outcomes, pg.notify_channel, wait=True),
        )
        assert [r[0] for r in rows] == [0]  # suspended, not committed yet
        completing = asyncio.create_task(pg.complete_token(TokenCompletion("tk-a", "1", NOW + 1)))
        await still_blocked(completing)
    done = await completing
    assert (done.completed, done.job_id, done.resumed) == (True, job_id, True)
    job = await get(pg, job_id)
    assert (job.state, job.wait_token, ts(job.run_at)) == ("queued", None, NOW + 1)
    assert (await event_types(pg, job_id))[-2:] == ["waiting", "resumed"]


async def test_a_suspend_waits_for_a_completion_in_flight_and_requeues_at_once(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    job_id = await running_with_token(pg, "tk-b")
    args = {"id": "tk-b", "data": '"ok"', "now": NOW, "notify_channel": pg.notify_channel}
    async with admin.transaction():
        assert await run(admin, pg.queries["token_complete"], args) == [(job_id,)]
        suspending = asyncio.create_task(pg.complete_many([suspend(job_id, "tk-b")]))
        await still_blocked(suspending)
        # the completion's second statement: the job is not waiting (yet), nothing to do
        assert await run(admin, pg.queries["token_resume"], {**args, "job_id": job_id}) == []
    assert await suspending == [True]
    job = await get(pg, job_id)
    assert (job.state, job.wait_token, ts(job.run_at)) == ("queued", None, NOW)
    types = await event_types(pg, job_id)
    assert types[-1] == "resumed" and "waiting" not in types


async def test_a_stale_suspend_and_a_completion_do_not_deadlock(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    """The job already waits on the token; a stale copy of its suspend (same lease token)
    arrives while the token is being completed. Both lock the token before the job, so
    the suspend just waits, then finds the job no longer running."""
    job_id = await running_with_token(pg, "tk-c")
    assert await pg.complete_many([suspend(job_id, "tk-c")]) == [True]
    args = {"id": "tk-c", "data": "2", "now": NOW + 1, "notify_channel": pg.notify_channel}
    async with admin.transaction():
        assert await run(admin, pg.queries["token_complete"], args) == [(job_id,)]
        stale = asyncio.create_task(pg.complete_many([suspend(job_id, "tk-c")]))
        await still_blocked(stale)
        resumed = await asyncio.wait_for(
            run(admin, pg.queries["token_resume"], {**args, "job_id": job_id}), 5
        )
        assert len(resumed) == 1
    assert await stale == [False]
    assert (await get(pg, job_id)).state == "queued"


async def test_suspends_racing_completions_never_leave_a_job_waiting(store: Store) -> None:
    backends = [await store.connected() for _ in range(4)]
    first = backends[0]
    jobs = {}
    for i in range(30):
        token_id = f"tk-race-{i}"
        jobs[token_id] = await running_with_token(first, token_id)  # type: ignore[arg-type]

    async def suspend_one(backend: Any, token_id: str) -> list[bool]:
        applied: list[bool] = await backend.complete_many([suspend(jobs[token_id], token_id)])
        return applied

    calls = []
    for i, token_id in enumerate(jobs):
        a, b = backends[i % 4], backends[(i + 1) % 4]
        calls.append(suspend_one(a, token_id))
        calls.append(b.complete_token(TokenCompletion(token_id, str(i), NOW + 1)))
    results = await asyncio.gather(*calls)
    assert all(r == [True] for r in results[0::2])
    assert all(r.completed for r in results[1::2])
    for job_id in jobs.values():
        job = await get(first, job_id)
        assert (job.state, job.wait_token) == ("queued", None)
        assert (await event_types(first, job_id)).count("resumed") == 1

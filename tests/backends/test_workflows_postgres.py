"""PostgreSQL only: workflows beyond the shared suite (test_workflows.py).

The triggers of migration 0006 (every path that ends or deletes a job: removal outcomes,
delete, cancel_jobs, a cascade far deeper than trigger recursion would allow), the
markers that keep unmarked jobs off them, resume_due leaving dependency waits alone,
enqueues in the caller's transaction, a dependency locked by an enqueue in flight, and
uniqueness windows under concurrent enqueues."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from conveyor.backends.base import (
    EnqueueParams,
    JobFilter,
    NewBatch,
    NewJob,
    Outcome,
    PruneParams,
    ResumeParams,
)
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.errors import ValidationError
from conveyor.models import JobState
from tests.backends.conftest import Store
from tests.backends.helpers import (
    NOW,
    claim,
    claim_ids,
    enqueue,
    error,
    event_types,
    finish,
    get,
    new_job,
)
from tests.conftest import PG_URL

BLOCKED = 0.3  # seconds a call is given to show that it waits on a lock


async def run_one(pg: PostgresBackend, job_id: int, token: str, **kw: Any) -> None:
    job = await get(pg, job_id)
    assert await claim_ids(pg, token=token, include=(job.name,)) == [job_id]
    await finish(pg, job_id, token, **kw)


async def markers(admin: psycopg.AsyncConnection[Any], schema: str, job_id: int) -> tuple[Any, ...]:
    cur = await admin.execute(
        f"SELECT has_dependents, has_dependencies, batch_pending, batch_id, deps_left "
        f'FROM "{schema}".jobs WHERE id = %s',
        [job_id],
    )
    row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def test_plain_jobs_carry_no_marker_and_the_triggers_filter_in_their_when(
    pg: PostgresBackend, store: Store, admin: psycopg.AsyncConnection[Any]
) -> None:
    [plain] = await enqueue(pg, new_job("plain"))
    await run_one(pg, plain, "t")
    assert await markers(admin, store.token, plain) == (False, False, False, None, None)
    cur = await admin.execute(
        "SELECT t.tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND NOT t.tgisinternal ORDER BY 1",
        [store.token],
    )
    defs = dict(await cur.fetchall())
    assert set(defs) == {"jobs_deleted", "jobs_ended"}
    assert "has_dependents" in defs["jobs_ended"] and "WHEN" in defs["jobs_ended"]
    assert "UPDATE OF state" in defs["jobs_ended"]


async def test_a_batch_counts_each_way_a_member_ends(pg: PostgresBackend) -> None:
    """The shared lifecycle test, with a name per member (a claim by name takes one)."""
    members = [new_job(f"mem-{i}", batch_id="b") for i in range(3)]
    callback = new_job("on-done", options='{"timeout": 5.0}')
    results = await pg.enqueue_many(EnqueueParams(members, NOW, batch=NewBatch("b", 3, callback)))
    ids = [r.id for r in results]
    await run_one(pg, ids[0], "t0")
    await run_one(pg, ids[1], "t1", state=JobState.QUEUED, run_at=NOW, error=error(),
                  event="retrying")  # fmt: skip
    assert await pg.cancel(ids[2], NOW) is not None
    record = await pg.get_batch("b")
    assert record is not None and record.state == "running" and record.callback_job_id is None
    await run_one(pg, ids[1], "t2", state=JobState.FAILED, error=error())
    record = await pg.get_batch("b")
    assert record is not None
    assert (record.completed, record.failed, record.cancelled, record.state) == (1, 1, 1, "done")
    assert record.callback_job_id is not None
    cb = await get(pg, record.callback_job_id)
    assert cb.state == JobState.QUEUED and cb.timeout == 5.0
    [claimed] = await claim(pg, token="cb", include=("on-done",))
    assert json.loads(claimed.options or "{}")["batch"] == {
        "id": "b", "total": 3, "completed": 1, "failed": 1, "cancelled": 1,
    }  # fmt: skip
    # a member retried after the batch is done changes nothing
    assert (await pg.retry(ids[1], NOW)).outcome.value == "retried"
    await run_one(pg, ids[1], "t3")
    again = await pg.get_batch("b")
    assert again is not None and (again.completed, again.failed) == (1, 1)
    assert len(await pg.list_jobs(JobFilter(name="on-done"))) == 1


async def test_removal_outcomes_end_members_and_dependencies(pg: PostgresBackend) -> None:
    """remove_on_complete / remove_on_fail delete the row in the outcome's statement: the
    delete trigger reads how it ended from the outcome's event."""
    members = [
        new_job("rm-ok", batch_id="r", remove_on_complete=True),
        new_job("rm-bad", batch_id="r"),
    ]
    ok, bad = (r.id for r in await pg.enqueue_many(
        EnqueueParams(members, NOW, batch=NewBatch("r", 2, new_job("r-cb")))))  # fmt: skip
    [after_ok] = await enqueue(pg, new_job("after-ok", depends_on=(ok,)))
    [after_bad] = await enqueue(pg, new_job("after-bad", depends_on=(bad,)))
    await run_one(pg, ok, "t1", remove=True)
    assert await pg.get_job(ok) is None
    assert (await get(pg, after_ok)).state == JobState.QUEUED
    await run_one(pg, bad, "t2", state=JobState.FAILED, error=error(), remove=True)
    assert (await get(pg, after_bad)).state == JobState.CANCELLED
    record = await pg.get_batch("r")
    assert record is not None and (record.completed, record.failed, record.state) == (1, 1, "done")
    assert await pg.dependency_results(after_ok) == {ok: None}  # gone: no result


async def test_a_long_chain_cancels_in_one_transition(pg: PostgresBackend) -> None:
    """A cascade is a loop in settle(), not trigger recursion: any depth."""
    depth = 300
    jobs = [new_job("link-0")] + [new_job(f"link-{i}", depends_on=(-i,)) for i in range(1, depth)]
    ids = await enqueue(pg, *jobs)
    assert (await pg.counts(None))["waiting"] == depth - 1
    await run_one(pg, ids[0], "t", state=JobState.FAILED, error=error())
    counts = await pg.counts(None)
    assert counts["cancelled"] == depth - 1 and counts["waiting"] == 0
    last = await pg.get_events(ids[-1])
    assert dict(last[-1].data) == {"reason": "dependency_failed", "dependency": ids[-2]}


async def test_cancel_jobs_and_delete_resolve_dependents(
    pg: PostgresBackend, store: Store, admin: psycopg.AsyncConnection[Any]
) -> None:
    _, b = await enqueue(pg, new_job("cj-a"), new_job("cj-b", depends_on=(-1,)))
    [c] = await enqueue(pg, new_job("cj-c", depends_on=(b,)))
    assert await pg.cancel_jobs(JobFilter(name="cj-a"), NOW + 5) == 1
    for job_id in (b, c):
        job = await get(pg, job_id)
        assert job.state == JobState.CANCELLED
        assert job.finished_at is not None and job.finished_at.timestamp() == NOW + 5
    # the unfinished member deleted counts as cancelled; deleting the callback takes the
    # batch row with it
    [m] = [r.id for r in await pg.enqueue_many(
        EnqueueParams([new_job("del-m", batch_id="d")], NOW, batch=NewBatch("d", 1, new_job("d-cb"))))]  # fmt: skip
    await pg.delete_jobs([m], NOW + 7)
    record = await pg.get_batch("d")
    assert record is not None and (record.cancelled, record.state) == (1, "done")
    assert record.callback_job_id is not None
    cb = await get(pg, record.callback_job_id)
    assert cb.created_at.timestamp() == NOW + 7
    await pg.delete_jobs([record.callback_job_id], NOW + 8)
    assert await pg.get_batch("d") is None
    # edges go with their dependent
    await pg.delete_jobs([c], NOW)
    cur = await admin.execute(
        f'SELECT count(*) FROM "{store.token}".job_dependencies WHERE job_id = %s', [c]
    )
    assert (await cur.fetchone()) == (0,)


async def test_resume_due_leaves_dependency_waits_alone(pg: PostgresBackend) -> None:
    [a] = await enqueue(pg, new_job("slow"))
    [b] = await enqueue(pg, new_job("patient", depends_on=(a,)))
    assert await pg.resume_due(ResumeParams(now=NOW + 10**6, limit=100)) == []
    assert (await get(pg, b)).state == JobState.WAITING
    # a run_at still ahead when the last dependency completes: scheduled
    [c] = await enqueue(pg, new_job("later", depends_on=(a,), run_at=NOW + 3600))
    await run_one(pg, a, "t")
    assert (await get(pg, b)).state == JobState.QUEUED
    assert (await get(pg, c)).state == JobState.SCHEDULED


async def test_enqueue_in_the_callers_transaction(pg: PostgresBackend) -> None:
    [a] = await enqueue(pg, new_job("outer-dep"))
    with psycopg.Connection.connect(PG_URL) as conn:
        [r] = pg.enqueue_many_sync(
            EnqueueParams([new_job("in-tx", depends_on=(a,))], NOW, connection=conn)
        )
        conn.rollback()
    assert await pg.get_job(r.id) is None
    async with await psycopg.AsyncConnection.connect(PG_URL) as aconn:
        [r] = await pg.enqueue_many(
            EnqueueParams([new_job("in-atx", depends_on=(a,))], NOW, connection=aconn)
        )
        await aconn.commit()
    assert (await get(pg, r.id)).state == JobState.WAITING
    with pytest.raises(ValidationError):
        await pg.enqueue_many(EnqueueParams([new_job("x", depends_on=(-1,))], NOW))


async def test_a_dependency_ending_during_an_enqueue_waits_for_it(
    pg: PostgresBackend, store: Store
) -> None:
    """The enqueue locks the dependency it read: the completion waits, then resolves."""
    [a] = await enqueue(pg, new_job("racing"))
    assert await claim_ids(pg, token="t", include=("racing",)) == [a]
    async with await psycopg.AsyncConnection.connect(PG_URL) as conn:
        [r] = await pg.enqueue_many(
            EnqueueParams([new_job("behind", depends_on=(a,))], NOW, connection=conn)
        )
        done = asyncio.ensure_future(
            pg.complete_many([Outcome(a, "t", JobState.COMPLETED, NOW, "completed")])
        )
        await asyncio.sleep(BLOCKED)
        assert not done.done()
        await conn.commit()
    assert await done == [True]
    assert (await get(pg, r.id)).state == JobState.QUEUED
    assert (await event_types(pg, r.id))[-1] == "resumed"


async def test_an_in_call_reference_to_a_deduplicated_job(pg: PostgresBackend) -> None:
    [first] = await enqueue(pg, new_job("keyed", idempotency_key="k"))
    results = await pg.enqueue_many(
        EnqueueParams(
            [new_job("keyed", idempotency_key="k"), new_job("needs-it", depends_on=(-1,))], NOW
        )
    )
    assert results[0].id == first and not results[0].created
    assert (await get(pg, results[1].id)).state == JobState.WAITING
    await run_one(pg, first, "t", result='"R"')
    assert (await get(pg, results[1].id)).state == JobState.QUEUED
    assert await pg.dependency_results(results[1].id) == {first: '"R"'}


async def test_concurrent_enqueues_past_a_window_create_one_job(store: Store) -> None:
    backends = [await store.connected() for _ in range(4)]
    job = new_job("w", idempotency_key="win", unique_for=10.0)
    [old] = await backends[0].enqueue_many(EnqueueParams([job], NOW))
    results = await asyncio.gather(
        *(b.enqueue_many(EnqueueParams([new_job("w", idempotency_key="win", unique_for=10.0)], NOW + 11))
          for b in backends)
    )  # fmt: skip
    created = [r[0] for r in results if r[0].created]
    assert len(created) == 1 and created[0].id != old.id
    assert {r[0].id for r in results} == {created[0].id}


async def test_an_empty_batch_after_deduplication_is_done_at_once(pg: PostgresBackend) -> None:
    [first] = await enqueue(pg, new_job("dup", idempotency_key="same"))
    members: list[NewJob] = [new_job("dup", idempotency_key="same", batch_id="e")]
    results = await pg.enqueue_many(
        EnqueueParams(members, NOW, batch=NewBatch("e", 1, new_job("e-cb")))
    )
    assert results[0].id == first and not results[0].created
    record = await pg.get_batch("e")
    assert record is not None and (record.total, record.state) == (0, "done")
    assert record.callback_job_id is not None
    await pg.prune(PruneParams(JobState.COMPLETED, NOW + 1, 10))

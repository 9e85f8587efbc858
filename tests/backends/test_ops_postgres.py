"""PostgreSQL only: the operations surface beyond the shared suite (test_ops.py).

Event ids across both id streams of ``read_events`` (a job's row and the stored events,
``cursor.py``), on whole pages and on pages cut by the limit; the plan of throughput (it
reads ``jobs_prune_idx``, also as a generic plan); bucket bounds; the registry's expired
rows; what ``delete_jobs`` frees."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import psycopg
import pytest

from conveyor.backends.base import (
    EnqueueParams,
    EventRead,
    JobFilter,
    ThroughputParams,
    WorkerRecord,
)
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.sqlfiles import native
from conveyor.models import Event, JobState
from tests.backends.conftest import Store
from tests.backends.helpers import NOW, claim_ids, enqueue, finish, new_job

Key = tuple[str, int, int, str]


def key(event: Event) -> Key:
    return (event.type, event.job_id, event.attempt, json.dumps(dict(event.data)))


async def read_all(pg: PostgresBackend, after: str, expected: int, limit: int) -> list[Event]:
    """Every event after ``after``, in pages of ``limit``, once ``expected`` came (an id
    gap may hold a page back while another test's transaction holds xmin), then one more
    page, which must be empty."""
    out: list[Event] = []
    cursor = after
    deadline = asyncio.get_running_loop().time() + 20
    while len(out) < expected and asyncio.get_running_loop().time() < deadline:
        page = await pg.read_events(EventRead(cursor, limit, 0.5))
        out += page.events
        cursor = page.cursor
    page = await pg.read_events(EventRead(cursor, limit, 0))
    return out + page.events


async def history(pg: PostgresBackend) -> tuple[str, int]:
    """A mix of both streams: jobs whose row is their `enqueued` event, jobs whose
    `enqueued` event is stored (remove_on_complete: completed, so deleted, its events
    kept), `started` / `completed` / `cancelled` events, interleaved. Returns the cursor
    before it all and how many events it made."""
    start = (await pg.read_events(EventRead(None, 0, 0))).cursor
    made = 0
    for round_ in range(3):
        ids = await enqueue(
            pg,
            new_job(f"a{round_}"),
            new_job(f"b{round_}", remove_on_complete=True),
            new_job(f"c{round_}"),
            now=NOW + round_,
        )
        made += 3
        for i, job_id in enumerate(ids[:2]):
            name = ("a", "b")[i] + str(round_)
            assert await claim_ids(pg, token=f"t{job_id}", include=(name,)) == [job_id]
            await finish(pg, job_id, f"t{job_id}", at=NOW + round_ + 0.5, remove=i == 1)
            made += 2  # started, completed
        assert await pg.cancel_jobs(JobFilter(name=f"c{round_}"), NOW + round_ + 0.7) == 1
        made += 1
    return start, made


@pytest.mark.parametrize("limit", [100, 4, 1])
async def test_each_event_id_resumes_right_after_it(pg: PostgresBackend, limit: int) -> None:
    start, made = await history(pg)
    seen = await read_all(pg, start, made, limit)
    assert len(seen) == made
    assert len(set(map(key, seen))) == made  # nothing twice
    for i, event in enumerate(seen):
        assert event.id is not None
        rest = await read_all(pg, event.id, made - i - 1, limit)
        assert Counter(map(key, rest)) == Counter(map(key, seen[i + 1 :])), (i, event)


async def test_a_page_cut_by_the_limit_gives_ids_of_what_it_returned(
    pg: PostgresBackend,
) -> None:
    start, made = await history(pg)
    page = await pg.read_events(EventRead(start, 5, 5))
    assert len(page.events) == 5
    assert page.events[-1].id is not None
    after_last = await read_all(pg, page.events[-1].id, made - 5, 100)
    after_page = await read_all(pg, page.cursor, made - 5, 100)
    assert Counter(map(key, after_last)) == Counter(map(key, after_page))
    assert len(after_last) == made - 5


async def test_throughput_reads_the_finished_index_even_as_a_generic_plan(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any], store: Store
) -> None:
    sql, names = native(pg.queries["throughput"])
    args = {"since": NOW, "bucket": 60.0, "buckets": 10}
    await admin.execute(f'SET search_path = "{store.token}"')
    await admin.execute("SET enable_seqscan = off")
    await admin.execute("SET plan_cache_mode = force_generic_plan")
    await admin.execute(f"PREPARE tp AS {sql}")
    values = ", ".join(repr(args[name]) for name in names)
    cur = await admin.execute(f"EXPLAIN EXECUTE tp({values})")
    plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "jobs_prune_idx" in plan, plan


async def test_a_job_finished_on_a_bucket_bound_is_in_the_bucket_that_starts_there(
    pg: PostgresBackend,
) -> None:
    since, bucket = NOW + 0.5, 0.1
    ids = await enqueue(pg, *(new_job(f"b{i}") for i in range(3)))
    for i, job_id in enumerate(ids):
        assert await claim_ids(pg, token=f"k{i}", include=(f"b{i}",)) == [job_id]
    for i, (job_id, at) in enumerate(
        zip(ids, [since, since + 3 * bucket, since + 5 * bucket], strict=True)
    ):
        await finish(pg, job_id, f"k{i}", at=at)
    buckets = await pg.throughput(ThroughputParams(since=since, bucket=bucket, buckets=5))
    assert [(b.index, b.completed) for b in buckets] == [(0, 1), (3, 1)]  # 5: past the end


async def test_listing_workers_forgets_the_expired_ones(
    pg: PostgresBackend, admin: psycopg.AsyncConnection[Any], store: Store
) -> None:
    for worker_id, expires in [("old", NOW + 5), ("live", NOW + 60)]:
        await pg.register_worker(WorkerRecord(worker_id, "h", 1, None, 2, (), NOW, NOW, expires))
    assert [w.id for w in await pg.list_workers(NOW + 10)] == ["live"]
    cur = await admin.execute(f'SELECT id FROM "{store.token}".workers')
    assert [row[0] for row in await cur.fetchall()] == ["live"]


async def test_a_deleted_job_frees_its_idempotency_key(pg: PostgresBackend) -> None:
    job = new_job("keyed", idempotency_key="k-1")
    [first] = await enqueue(pg, job)
    removed = await pg.delete_jobs([first, first], NOW)
    assert [r.id for r in removed] == [first]
    [again] = await pg.enqueue_many(EnqueueParams([job], NOW))
    assert again.created and again.id != first


async def test_name_prefix_is_literal_for_backslashes_too(pg: PostgresBackend) -> None:
    ids = await enqueue(pg, new_job("a\\b"), new_job("a\\\\b"), new_job("ab"))
    found = await pg.list_jobs(JobFilter(name_prefix="a\\b"))
    assert [j.id for j in found] == [ids[0]]
    found = await pg.list_jobs(JobFilter(name_prefix="a\\", state=JobState.QUEUED))
    assert sorted(j.id for j in found) == ids[:2]

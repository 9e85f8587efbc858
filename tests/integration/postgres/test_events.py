"""Events on PostgreSQL: a job's `enqueued` event is its row (stored only where the row
cannot carry it), and the read_events stream merges both, gap-safe, deleted jobs
included."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import psycopg

from conveyor.backends.base import EnqueueParams, PruneParams, RetryOutcome, RetryResult
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.cursor import EventsCursor
from conveyor.models import Event, JobState
from tests.integration.postgres.conftest import MakeBackend
from tests.integration.postgres.helpers import (
    NOW,
    claim_params,
    done,
    enqueue,
    new_job,
    read_events,
)


async def _stored_types(admin: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    cur = await admin.execute(f'SELECT type FROM "{schema}".job_events ORDER BY id')
    return [row[0] for row in await cur.fetchall()]


async def test_the_enqueued_event_is_the_job_row(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    [one] = await enqueue(backend, new_job("one", tenant="acme"))
    pair = await enqueue(backend, new_job("a"), new_job("b", idempotency_key="k"))
    assert await _stored_types(admin, schema) == []  # nothing but the rows
    [event] = await backend.get_events(one)
    assert (event.type, event.job_id, event.job_name, event.tenant, event.attempt) == (
        "enqueued",
        one,
        "one",
        "acme",
        0,
    )
    assert event.at.timestamp() == NOW and event.data == {}
    for job_id in pair:
        assert [e.type for e in await backend.get_events(job_id)] == ["enqueued"]
    assert await backend.get_events(10**9) == []


async def test_a_retry_stores_its_enqueued_event(backend: PostgresBackend) -> None:
    [job_id] = await enqueue(backend, new_job())
    await backend.claim(claim_params(token="t"))
    await backend.complete_many([done(job_id, "t", JobState.FAILED)])
    assert await backend.retry(job_id, NOW + 5) == RetryResult(RetryOutcome.RETRIED)
    events = await backend.get_events(job_id)
    assert [(e.type, e.data) for e in events] == [
        ("enqueued", {}),
        ("started", {}),
        ("failed", {}),
        ("enqueued", {"retry": True}),
    ]
    assert events[-1].at.timestamp() == NOW + 5


async def test_an_enqueued_event_stored_before_the_upgrade_is_not_doubled(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """Jobs enqueued by a conveyor that stored every `enqueued` event."""
    _, head = await read_events(backend, None, 0, 0)
    [job_id] = await enqueue(backend, new_job("old"))
    await admin.execute(
        f'INSERT INTO "{schema}".job_events (job_id, type, job_name, attempt, at)'
        " VALUES (%s, 'enqueued', 'old', 0, to_timestamp(%s))",
        [job_id, NOW],
    )
    assert [e.type for e in await backend.get_events(job_id)] == ["enqueued"]
    events, _ = await read_events(backend, head, 100, 0)
    assert [(e.type, e.job_id) for e in events] == [("enqueued", job_id)]


def _per_job(events: list[Event]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for e in events:
        out.setdefault(e.job_id, []).append(e.type)
    return out


async def _remove(backend: PostgresBackend, job_id: int, token: str) -> None:
    """Run a remove_on_complete job to its end: its row is deleted."""
    [claimed] = await backend.claim(claim_params(token=token))
    assert claimed.id == job_id and claimed.remove_on_complete
    assert await backend.complete_many([done(job_id, token, remove=True)]) == [True]
    assert await backend.get_job(job_id) is None


async def test_stream_yields_a_removed_job_and_does_not_wait_on_its_gap(
    backend: PostgresBackend,
) -> None:
    _, head = await read_events(backend, None, 0, 0)
    [removed] = await enqueue(backend, new_job("r", remove_on_complete=True))
    await _remove(backend, removed, "t1")
    [kept] = await enqueue(backend, new_job("k"))
    start = time.monotonic()
    events, cursor = await read_events(backend, head, 100, 0)  # no waiting at all
    assert time.monotonic() - start < 1
    assert _per_job(events) == {removed: ["enqueued", "started", "completed"], kept: ["enqueued"]}
    assert EventsCursor.decode(cursor).jobs.last == kept
    assert await read_events(backend, cursor, 100, 0) == ([], cursor)


async def test_stream_yields_the_newest_job_when_it_was_removed(backend: PostgresBackend) -> None:
    """No job after it: its events alone move the jobs cursor past it."""
    _, head = await read_events(backend, None, 0, 0)
    ids = await enqueue(backend, new_job("a", remove_on_complete=True), new_job("b"))
    await backend.claim(claim_params(token="t", limit=1))  # a
    await enqueue(backend, new_job("c", remove_on_complete=True))
    await backend.complete_many([done(ids[0], "t", remove=True)])
    [c] = await backend.claim(claim_params(token="u", include=("c",)))
    await backend.complete_many([done(c.id, "u", remove=True)])
    events, cursor = await read_events(backend, head, 100, 0)
    assert _per_job(events) == {
        ids[0]: ["enqueued", "started", "completed"],
        ids[1]: ["enqueued"],
        c.id: ["enqueued", "started", "completed"],
    }
    assert EventsCursor.decode(cursor).jobs.last == c.id


async def test_stream_passes_a_pruned_job_once_the_gap_settles(
    backend: PostgresBackend,
) -> None:
    _, head = await read_events(backend, None, 0, 0)
    [pruned] = await enqueue(backend, new_job("p"))
    await backend.claim(claim_params(token="t"))
    await backend.complete_many([done(pruned, "t")])
    pruned = await backend.prune(PruneParams(JobState.COMPLETED, NOW + 1, 10))
    assert pruned.count == 1  # row and events
    [kept] = await enqueue(backend, new_job("k"))
    start = time.monotonic()
    events, cursor = await read_events(backend, head, 100, 3)
    assert time.monotonic() - start < 2  # settled by the xid horizon, not GAP_GRACE
    assert [(e.type, e.job_id) for e in events] == [("enqueued", kept)]
    assert ":" not in cursor


async def test_stream_holds_a_jobs_events_until_its_enqueue_commits(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    """A job id held by a transaction in flight stops the stream there: later jobs'
    events wait too, then come in order, each job's `enqueued` first."""
    _, head = await read_events(backend, None, 0, 0)
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as tx:
        [slow] = await backend.enqueue_many(EnqueueParams([new_job("slow")], NOW, tx))
        [fast] = await enqueue(backend, new_job("fast"))
        await backend.claim(claim_params(token="t", include=("fast",)))
        await backend.complete_many([done(fast, "t")])
        events, cursor = await read_events(backend, head, 100, 0.3)
        assert events == []
        await tx.commit()
    events, _ = await read_events(backend, cursor, 100, 2)
    assert [(e.type, e.job_id) for e in events] == [
        ("enqueued", slow.id),
        ("enqueued", fast),
        ("started", fast),
        ("completed", fast),
    ]


async def test_stream_with_a_small_limit_misses_and_repeats_nothing(
    backend: PostgresBackend,
) -> None:
    """Jobs kept, removed on completion and pruned, read a few at a time in between."""
    _, cursor = await read_events(backend, None, 0, 0)
    rng = random.Random(7)
    expected: dict[int, list[str]] = {}
    pruned: set[int] = set()
    seen: list[Event] = []
    for round_ in range(6):
        jobs = [new_job(f"r{round_}", remove_on_complete=rng.random() < 0.4) for _ in range(12)]
        ids = await enqueue(backend, *jobs, now=NOW + round_)
        token = f"t{round_}"
        claimed = await backend.claim(claim_params(token=token, limit=8, now=NOW + round_))
        await backend.complete_many(
            [done(c.id, token, remove=c.remove_on_complete) for c in claimed]
        )
        for job_id in ids:
            expected[job_id] = ["enqueued"]
        for c in claimed:
            expected[c.id] += ["started", "completed"]
        if round_ == 2:  # prune what finished so far: rows and events leave the stream
            pruned = {job_id for job_id, types in expected.items() if len(types) == 3}
            await backend.prune(PruneParams(JobState.COMPLETED, NOW + 100, 1000))
        for _ in range(rng.randrange(3)):  # read part of it now, a few at a time
            limit = rng.randrange(1, 5)
            batch, cursor = await read_events(backend, cursor, limit, 0)
            assert len(batch) <= limit
            seen.extend(batch)
    while True:
        batch, cursor = await read_events(backend, cursor, 3, 1)
        if not batch:
            break
        assert len(batch) <= 3
        seen.extend(batch)
    got = _per_job(seen)
    for job_id, types in expected.items():
        if job_id in pruned:  # read up to its prune, then nothing more
            assert types[: len(got.get(job_id, []))] == got.get(job_id, []), job_id
        else:
            assert got.get(job_id) == types, (job_id, got.get(job_id))
    assert set(got) <= set(expected)


async def test_stream_under_concurrent_enqueues_rollbacks_and_removals(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    """Producers enqueue one by one, in batches and in transactions that commit or roll
    back; a worker runs and removes jobs; a reader follows a few events at a time. Each
    committed job comes once, in order; rolled-back ones never."""
    reader, worker = await new_backend(), await new_backend(migrate=False)
    producers = [await new_backend(migrate=False) for _ in range(2)]
    _, cursor = await read_events(reader, None, 0, 0)
    committed: set[int] = set()
    rolled_back: set[int] = set()
    processed: set[int] = set()
    producing = True

    async def produce(n: int, backend: PostgresBackend) -> None:
        rng = random.Random(n)
        for round_ in range(25):
            jobs = [
                new_job(f"p{n}", remove_on_complete=rng.random() < 0.3)
                for _ in range(rng.choice((1, 1, 3, 20)))
            ]
            if rng.random() < 0.3:
                async with await psycopg.AsyncConnection.connect(admin.info.dsn) as tx:
                    results = await backend.enqueue_many(EnqueueParams(jobs, NOW, tx))
                    await asyncio.sleep(rng.random() * 0.02)  # held open meanwhile
                    if round_ % 2:
                        await tx.rollback()
                        rolled_back.update(r.id for r in results)
                        continue
                    await tx.commit()
                committed.update(r.id for r in results)
            else:
                committed.update(await enqueue(backend, *jobs))

    async def work() -> None:
        n = 0
        while producing or len(processed) < len(committed):
            n += 1
            batch = await worker.claim(claim_params(token=f"w{n}", limit=7))
            if not batch:
                await asyncio.sleep(0.005)
                continue
            outcomes = [done(c.id, f"w{n}", remove=c.remove_on_complete) for c in batch]
            await worker.complete_many(outcomes)
            processed.update(c.id for c in batch)

    seen: list[Event] = []

    async def read() -> None:
        nonlocal cursor
        while producing or {e.job_id for e in seen if e.type == "completed"} != committed:
            batch, cursor = await read_events(reader, cursor, 5, 0.05)
            assert len(batch) <= 5
            seen.extend(batch)

    async def run_producers() -> None:
        nonlocal producing
        await asyncio.gather(*(produce(n, p) for n, p in enumerate(producers)))
        producing = False

    await asyncio.wait_for(asyncio.gather(run_producers(), work(), read()), 60)
    got = _per_job(seen)
    assert set(got) == committed and not rolled_back & set(got)
    assert all(types == ["enqueued", "started", "completed"] for types in got.values())

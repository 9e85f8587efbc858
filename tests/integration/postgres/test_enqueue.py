"""The enqueue statements: one job (typed insert), batches (one JSON document), with and
without idempotency keys; ids, fields and payloads come back exactly."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg

from conveyor.backends.base import EnqueueParams, JobFilter, NewJob
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.models import JobState
from tests.integration.postgres.conftest import MakeBackend
from tests.integration.postgres.helpers import (
    NOW,
    claim_params,
    done,
    enqueue,
    eventually,
    new_job,
)

PAYLOADS = [
    '{"n":1}',
    '{"b": 1, "a": [1.50, "ü\\u00e9"],  "n": null}',  # spacing and an escape, verbatim
    '{"nul":"a\\u0000b","tab":"\\t","ctl":"\\u001f"}',  # \u0000: json cannot decode it
    '{"deep":' * 40 + "1" + "}" * 40,
    '"just a string"',
    "null",
    "0",
    "-1.5e+300",
    "[]",
    "true",
    '{"emoji":"🚀","zh":"中文","rtl":"עברית","quote":"\\"","slash":"\\\\/"}',
    ' {"padded": true} ',  # whitespace around the value is kept too
    json.dumps({"big": ["x" * 1000] * 1000}),  # about 1 MB
]


async def _raw_payloads(
    admin: psycopg.AsyncConnection[Any], schema: str, ids: list[int]
) -> list[str]:
    cur = await admin.execute(
        f'SELECT payload FROM "{schema}".jobs WHERE id = ANY(%s) ORDER BY id', [ids]
    )
    return [row[0] for row in await cur.fetchall()]


async def test_payloads_round_trip_verbatim_one_by_one_and_in_a_batch(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    single = [(await enqueue(backend, new_job(payload=p)))[0] for p in PAYLOADS]
    batch = await enqueue(backend, *(new_job(payload=p) for p in PAYLOADS))
    assert batch == sorted(batch) and len(set(batch)) == len(PAYLOADS)
    assert await _raw_payloads(admin, schema, single) == PAYLOADS
    assert await _raw_payloads(admin, schema, batch) == PAYLOADS
    for job_id, text in zip(batch, PAYLOADS, strict=True):
        job = await backend.get_job(job_id)
        assert job is not None and job.payload == json.loads(text)
    claimed = await backend.claim(claim_params(limit=100))
    assert sorted(c.payload for c in claimed) == sorted(PAYLOADS * 2)


def _varied(i: int) -> NewJob:
    """Jobs whose every field differs from the batch defaults now and then."""
    return new_job(
        f"name-{i}-ü",
        payload=json.dumps({"i": i}),
        state=JobState.SCHEDULED if i % 5 == 1 else JobState.QUEUED,
        run_at=NOW + 60 + i if i % 5 == 1 else NOW,
        priority=(i % 7) - 3,
        channel="default" if i % 3 else f"ch-{i % 4}",
        max_attempts=1 + i % 4,
        options='{"timeout": 5, "name": "é"}' if i % 6 == 0 else None,
        remove_on_complete=i % 8 == 0,
        tags=tuple(f"t{j}" for j in range(i % 3)) + (("ü",) if i % 9 == 0 else ()),
        group=f"g{i % 4}" if i % 2 else None,
        tenant=f"tenant-{i % 3}" if i % 4 == 0 else None,
    )


async def _stored(admin: psycopg.AsyncConnection[Any], schema: str, ids: list[int]) -> list[Any]:
    cur = await admin.execute(
        "SELECT id, name, payload, state, extract(epoch FROM run_at)::float8,"
        " extract(epoch FROM created_at)::float8, priority, channel, max_attempts, options,"
        " remove_on_complete, idempotency_key, tags, group_key, tenant"
        f' FROM "{schema}".jobs WHERE id = ANY(%s) ORDER BY id',
        [ids],
    )
    return list(await cur.fetchall())


def _expected(job_id: int, job: NewJob) -> tuple[Any, ...]:
    return (
        job_id,
        job.name,
        job.payload,
        job.state.value,
        job.run_at,
        NOW,
        job.priority,
        job.channel,
        job.max_attempts,
        job.options,
        job.remove_on_complete,
        job.idempotency_key,
        list(job.tags),
        job.group,
        job.tenant,
    )


async def test_every_field_is_stored_alike_one_by_one_and_in_a_batch(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    jobs = [_varied(i) for i in range(40)]
    batch = await enqueue(backend, *jobs)
    single = [(await enqueue(backend, job))[0] for job in jobs]
    rows = await _stored(admin, schema, batch + single)
    assert rows == [_expected(i, j) for i, j in zip(batch + single, jobs + jobs, strict=True)]


async def test_concurrent_batches_map_ids_back_in_input_order(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """Two batches drawing from the sequence at once: ids interleave, yet each batch's
    ids, ascending, are its jobs in input order."""
    a, b = await new_backend(), await new_backend(migrate=False)

    async def batch(backend: PostgresBackend, tag: str) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for n in range(5):
            payloads = [json.dumps({"who": tag, "n": n, "i": i}) for i in range(500)]
            ids = await enqueue(backend, *(new_job(payload=p) for p in payloads))
            out.extend(zip(ids, payloads, strict=True))
        return out

    pairs = [p for part in await asyncio.gather(batch(a, "a"), batch(b, "b")) for p in part]
    cur = await admin.execute(f'SELECT id, payload FROM "{schema}".jobs')
    assert dict(await cur.fetchall()) == dict(pairs)
    assert len(pairs) == 5000


async def test_keyed_batch_maps_every_kind_of_row(backend: PostgresBackend) -> None:
    [old] = await enqueue(backend, new_job(idempotency_key="old", tenant="t"))
    [other_tenant] = await enqueue(backend, new_job(idempotency_key="old"))
    jobs = [
        new_job(payload='{"i":0}'),
        new_job(idempotency_key="old", tenant="t"),  # exists
        new_job(idempotency_key="new", payload='{"i":2}'),
        new_job(payload='{"i":3}'),
        new_job(idempotency_key="new"),  # repeated in the batch
        new_job(idempotency_key="old", tenant="u", payload='{"i":5}'),  # another tenant
        new_job(idempotency_key="old"),  # exists, no tenant
        new_job(payload='{"i":7}', remove_on_complete=True),
    ]
    results = await backend.enqueue_many(EnqueueParams(jobs, NOW))
    created = [r.created for r in results]
    assert created == [True, False, True, True, False, True, False, True]
    assert results[1].id == old and results[6].id == other_tenant
    assert results[4].id == results[2].id
    for i in (0, 2, 3, 5, 7):
        job = await backend.get_job(results[i].id)
        assert job is not None and job.payload == {"i": i}
    assert len(await backend.list_jobs(JobFilter())) == 2 + 5
    # a removable job's `enqueued` event is stored: it is there once, not twice
    assert [e.type for e in await backend.get_events(results[7].id)] == ["enqueued"]


async def test_one_keyed_job_new_existing_and_removable(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    [first] = await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW))
    [again] = await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW))
    assert first.created and not again.created and again.id == first.id
    [removable] = await backend.enqueue_many(
        EnqueueParams([new_job(idempotency_key="r", remove_on_complete=True)], NOW)
    )
    [plain_removable] = await enqueue(backend, new_job(remove_on_complete=True))
    cur = await admin.execute(
        f'SELECT job_id FROM "{schema}".job_events WHERE type = %s ORDER BY id', ["enqueued"]
    )
    assert [row[0] for row in await cur.fetchall()] == [removable.id, plain_removable]
    for job_id in (first.id, removable.id, plain_removable):
        assert [e.type for e in await backend.get_events(job_id)] == ["enqueued"]


async def _waiting_on_a_lock(admin: psycopg.AsyncConnection[Any], app: str) -> bool:
    cur = await admin.execute(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
        [app],
    )
    return bool(await cur.fetchall())


async def test_one_keyed_job_whose_key_commits_concurrently_gets_that_id(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """The single-job statement waits on the other transaction's key, which commits
    after its snapshot: the second look finds it."""
    backend = await new_backend(app=f"{schema}-one")
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as tx:
        [first] = await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW, tx))
        task = asyncio.create_task(
            backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW))
        )
        await eventually(lambda: _waiting_on_a_lock(admin, f"{schema}-one"))
        await tx.commit()
    [dup] = await task
    assert (dup.id, dup.created) == (first.id, False)
    assert (await backend.counts(None))["queued"] == 1


async def test_notify_only_when_something_was_inserted(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    await enqueue(backend, new_job(idempotency_key="k", channel="a"))
    await enqueue(backend, new_job(idempotency_key="b1", channel="b"), new_job(channel="b"))
    await admin.execute(f'LISTEN "{backend.notify_channel}"')
    await enqueue(backend, new_job(idempotency_key="k", channel="a"))  # a duplicate: silent
    await enqueue(backend, new_job(channel="c"))
    await enqueue(backend, new_job(channel="d", remove_on_complete=True))
    await enqueue(backend, new_job(channel="e", state=JobState.SCHEDULED, run_at=NOW + 9))
    got = [json.loads(n.payload) async for n in admin.notifies(timeout=0.5)]
    assert got == [{"c": 1}, {"d": 1}]


async def test_empty_batch(backend: PostgresBackend) -> None:
    assert await backend.enqueue_many(EnqueueParams([], NOW)) == []


async def test_sync_caller_connection_takes_every_statement(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    """enqueue_many_sync on the caller's connection: one job, a batch, keyed batches."""
    with psycopg.Connection.connect(admin.info.dsn) as conn:
        [one] = backend.enqueue_many_sync(EnqueueParams([new_job("one")], NOW, conn))
        batch = backend.enqueue_many_sync(
            EnqueueParams([new_job("b0"), new_job("b1", remove_on_complete=True)], NOW, conn)
        )
        keyed = backend.enqueue_many_sync(
            EnqueueParams([new_job("k", idempotency_key="k"), new_job("x")], NOW, conn)
        )
        again = backend.enqueue_many_sync(
            EnqueueParams([new_job("k", idempotency_key="k")], NOW, conn)
        )
        conn.commit()
    assert again[0].id == keyed[0].id and not again[0].created
    names = {}
    for result in (one, *batch, *keyed):
        job = await backend.get_job(result.id)
        assert job is not None
        names[result.id] = job.name
    assert list(names.values()) == ["one", "b0", "b1", "k", "x"]


async def test_completing_and_claiming_jobs_of_every_statement(backend: PostgresBackend) -> None:
    """Rows of every enqueue statement are ordinary jobs to the hot path."""
    ids = [
        *(await enqueue(backend, new_job())),
        *(await enqueue(backend, new_job(idempotency_key="a"))),
        *(await enqueue(backend, new_job(remove_on_complete=True))),
        *(await enqueue(backend, new_job(), new_job(tags=("x",)))),
        *(await enqueue(backend, new_job(idempotency_key="b"), new_job())),
    ]
    claimed = {c.id: c for c in await backend.claim(claim_params(limit=20))}
    assert sorted(claimed) == ids
    assert [i for i in ids if claimed[i].remove_on_complete] == [ids[2]]
    outcomes = [done(i, remove=claimed[i].remove_on_complete) for i in ids]
    assert await backend.complete_many(outcomes) == [True] * len(ids)
    assert (await backend.counts(None))["completed"] == len(ids) - 1  # one was removed

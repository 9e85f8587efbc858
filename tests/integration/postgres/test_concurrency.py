"""Concurrent claimers, groups and enqueues on a real server (separate connections,
separate processes)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import psycopg

from conveyor.backends.base import EnqueueParams
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.models import JobState
from tests.integration.postgres import procs
from tests.integration.postgres.conftest import MakeBackend
from tests.integration.postgres.helpers import (
    NOW,
    claim_params,
    done,
    enqueue,
    eventually,
    new_job,
    run_children,
)


async def test_concurrent_claimers_never_claim_a_job_twice(new_backend: MakeBackend) -> None:
    backends = [await new_backend(migrate=i == 0) for i in range(4)]
    total = 1000
    ids = await enqueue(backends[0], *(new_job(priority=i % 3) for i in range(total)))
    claimed: list[int] = []

    async def claimer(n: int, backend: PostgresBackend) -> None:
        idle = 0
        while idle < 3:
            token = f"w{n}-{len(claimed)}"
            batch = await backend.claim(claim_params(token=token, limit=10, worker_id=f"w{n}"))
            if not batch:
                idle += 1
                continue
            idle = 0
            claimed.extend(j.id for j in batch)
            assert await backend.complete_many([done(j.id, token) for j in batch]) == [True] * len(
                batch
            )

    await asyncio.gather(*(claimer(n, b) for n, b in enumerate(backends)))
    assert len(claimed) == total
    assert sorted(claimed) == sorted(ids)
    counts = await backends[0].counts(None)
    assert counts["completed"] == total and counts["running"] == 0


async def test_groups_never_run_two_at_once_under_concurrent_claimers(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    backends = [await new_backend(migrate=i == 0) for i in range(4)]
    groups = [f"g{i}" for i in range(8)]
    jobs = [new_job(group=groups[i % len(groups)]) for i in range(240)]
    jobs += [new_job() for _ in range(60)]
    await enqueue(backends[0], *jobs)
    running: set[str] = set()
    seen = Counter[str]()
    violations: list[str] = []
    stop = asyncio.Event()

    async def claimer(n: int, backend: PostgresBackend) -> None:
        idle = 0
        while idle < 5:
            token = f"w{n}-{sum(seen.values())}"
            batch = await backend.claim(claim_params(token=token, limit=4))
            if not batch:
                idle += 1
                await asyncio.sleep(0.005)
                continue
            idle = 0
            batch_groups = [j.group for j in batch if j.group is not None]
            if len(batch_groups) != len(set(batch_groups)):
                violations.append(f"two of one group in a batch: {batch_groups}")
            for group in batch_groups:
                if group in running:
                    violations.append(f"group {group} claimed while running")
                running.add(group)
                seen[group] += 1
            await asyncio.sleep(0.001)  # "work"
            # The group is busy until complete_many commits: forget it before that.
            running.difference_update(batch_groups)
            await backend.complete_many([done(j.id, token) for j in batch])

    async def watch() -> None:
        """The database's own view: never two running jobs of one group."""
        while not stop.is_set():
            cur = await admin.execute(
                f'SELECT group_key FROM "{schema}".jobs WHERE state = %s AND group_key IS NOT NULL'
                " GROUP BY group_key HAVING count(*) > 1",
                [JobState.RUNNING.value],
            )
            rows = await cur.fetchall()
            if rows:
                violations.append(f"database shows {rows}")
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(claimer(n, b) for n, b in enumerate(backends)))
    stop.set()
    await watcher
    assert violations == []
    assert all(seen[g] == 30 for g in groups)
    assert (await backends[0].counts(None))["completed"] == 300


async def test_idempotent_enqueue_from_many_processes_gives_one_id(
    backend: PostgresBackend, schema: str
) -> None:
    keys = [f"k{i}" for i in range(25)]
    outputs = run_children(procs.enqueue_keys, [(schema, keys, i % 2 == 1) for i in range(4)])
    for out in outputs:
        assert isinstance(out, list), out
    by_key: dict[str, list[tuple[int, bool]]] = {}
    for out in outputs:
        for key, job_id, created in out:
            by_key.setdefault(key, []).append((job_id, created))
    for key in keys:
        results = by_key[key]
        assert len({job_id for job_id, _ in results}) == 1, (key, results)
        assert sum(created for _, created in results) == 1, (key, results)
    assert (await backend.counts(None))["queued"] == len(keys)


async def _waiting_on_a_lock(admin: psycopg.AsyncConnection[Any], app: str) -> bool:
    cur = await admin.execute(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
        [app],
    )
    return bool(await cur.fetchall())


async def test_key_committed_by_a_concurrent_transaction_returns_its_id(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """The insert waits on the other transaction's key, which commits after the insert's
    snapshot: the id is found by a second look, not lost (and nothing is duplicated)."""
    backend = await new_backend(app=f"{schema}-idem")
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as tx:
        [first] = await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW, tx))
        task = asyncio.create_task(
            backend.enqueue_many(
                EnqueueParams([new_job(idempotency_key="k"), new_job(idempotency_key="n")], NOW)
            )
        )
        await eventually(lambda: _waiting_on_a_lock(admin, f"{schema}-idem"))
        await tx.commit()
    dup, other = await task
    assert (dup.id, dup.created) == (first.id, False)
    assert other.created
    assert (await backend.counts(None))["queued"] == 2


async def test_key_of_a_rolled_back_enqueue_is_free_again(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    backend = await new_backend(app=f"{schema}-idem")
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as tx:
        await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW, tx))
        task = asyncio.create_task(
            backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW))
        )
        await eventually(lambda: _waiting_on_a_lock(admin, f"{schema}-idem"))
        await tx.rollback()
    [result] = await task
    assert result.created
    job = await backend.get_job(result.id)
    assert job is not None and job.idempotency_key == "k"


async def test_group_taken_after_the_claims_snapshot_is_not_taken_twice(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """Deterministic version of the race a snapshot-only check loses: claimer Y has seen
    group g1 free, stalls (on a lock held below), claimer X takes g1 meanwhile and
    commits; when Y resumes, g1 must be refused, not read from Y's old snapshot."""
    y = await new_backend(app=f"{schema}-y")
    x = await new_backend()
    c, _a, b = await enqueue(
        y, new_job(group="g0"), new_job(group="g1"), new_job(group="g1", run_at=NOW + 1)
    )  # b is due for X only, so Y does not lock it
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as blocker:
        # an uncommitted running_groups row for g0: Y's claim waits on it
        await blocker.execute(
            f'INSERT INTO "{schema}".running_groups (group_key, job_id) VALUES (%s, 0)', ["g0"]
        )
        y_claim = asyncio.create_task(y.claim(claim_params(token="y")))
        await eventually(lambda: _waiting_on_a_lock(admin, f"{schema}-y"))
        assert [j.id for j in await x.claim(claim_params(token="x", now=NOW + 1))] == [b]
        await blocker.rollback()
    assert [j.id for j in await y_claim] == [c]  # a (group g1) was refused
    cur = await admin.execute(
        f'SELECT id FROM "{schema}".jobs WHERE state = %s AND group_key = %s', ["running", "g1"]
    )
    assert [row[0] for row in await cur.fetchall()] == [b]
    assert await y.claim(claim_params(token="z", now=NOW + 1)) == []  # g1 still busy

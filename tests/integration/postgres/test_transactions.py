"""Transactional enqueue: the job is part of the caller's transaction."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from conveyor.backends.base import EnqueueParams
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.errors import UnsupportedError, ValidationError
from conveyor.models import JobState
from tests.integration.postgres.conftest import MakeBackend
from tests.integration.postgres.helpers import NOW, claim_params, eventually, new_job


async def _listening(admin: psycopg.AsyncConnection[Any], app: str) -> bool:
    cur = await admin.execute(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND query LIKE 'LISTEN%%'",
        [f"{app}:listen"],
    )
    return bool(await cur.fetchall())


async def _woken_within(backend: PostgresBackend, seconds: float) -> bool:
    start = time.monotonic()
    await backend.wait_for_work(seconds)
    return time.monotonic() - start < seconds * 0.9


async def test_async_connection_commit_and_rollback(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    backend = await new_backend()
    worker = await new_backend(app=f"{schema}-worker")
    await worker.wait_for_work(0)  # the first wait starts the LISTEN connection
    await eventually(lambda: _listening(admin, f"{schema}-worker"))
    # forget the one wake-up of the listener's connect (it may still be on its way)
    assert await _woken_within(worker, 5)

    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as conn:
        async with conn.transaction(force_rollback=True):
            [rolled] = await backend.enqueue_many(
                EnqueueParams([new_job(idempotency_key="k")], NOW, conn)
            )
            assert rolled.created
        assert await backend.get_job(rolled.id) is None

        async with conn.transaction():
            [kept] = await backend.enqueue_many(
                EnqueueParams([new_job(idempotency_key="k")], NOW, conn)
            )
            assert kept.created  # the rolled-back key is free again
            assert await backend.get_job(kept.id) is None  # not committed: invisible
            assert await worker.claim(claim_params()) == []
            assert not await _woken_within(worker, 0.3)  # NOTIFY waits for the commit
        assert await _woken_within(worker, 5)
    assert [j.id for j in await worker.claim(claim_params())] == [kept.id]


async def test_sync_connection_commit_and_rollback(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    with psycopg.Connection.connect(admin.info.dsn) as conn:
        [rolled] = backend.enqueue_many_sync(EnqueueParams([new_job()], NOW, conn))
        conn.rollback()
        assert await backend.get_job(rolled.id) is None
        [kept] = backend.enqueue_many_sync(EnqueueParams([new_job("sync")], NOW, conn))
        assert await backend.get_job(kept.id) is None
        conn.commit()
        job = await backend.get_job(kept.id)
        assert job is not None and job.name == "sync"
        # async enqueue on a sync connection runs it in a thread, same transaction rules
        [other] = await backend.enqueue_many(EnqueueParams([new_job("thread")], NOW, conn))
        assert await backend.get_job(other.id) is None
        conn.commit()
        assert await backend.get_job(other.id) is not None


async def test_connection_types(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    # what the backend declares is what it does: connection= works (sync and async,
    # above), sync code without one is refused (the core uses its portal thread)
    assert backend.supports_transactions and not backend.sync_enqueue
    with pytest.raises(UnsupportedError):
        backend.enqueue_many_sync(EnqueueParams([new_job()], NOW))
    with pytest.raises(UnsupportedError):
        backend.enqueue_many_sync(EnqueueParams([new_job()], NOW, admin))
    with pytest.raises(ValidationError):
        await backend.enqueue_many(EnqueueParams([new_job()], NOW, object()))


async def test_sync_enqueue_without_connect(
    schema: str, backend: PostgresBackend, admin: Any
) -> None:
    """enqueue_sync(connection=…) uses a backend that was never connected (no pool)."""
    from tests.integration.postgres.helpers import make_backend

    fresh = make_backend(schema)
    with psycopg.Connection.connect(admin.info.dsn) as conn:
        [res] = fresh.enqueue_many_sync(EnqueueParams([new_job()], NOW, conn))
        conn.commit()
    assert await backend.get_job(res.id) is not None


async def test_one_notify_per_enqueue_naming_channels_only(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    await admin.execute(f'LISTEN "{backend.notify_channel}"')
    jobs = [new_job(channel="a", payload='{"secret": 1}') for _ in range(50)]
    jobs += [new_job(channel="b"), new_job(channel="c", state=JobState.SCHEDULED, run_at=NOW + 9)]
    await backend.enqueue_many(EnqueueParams(jobs, NOW))
    got = [n async for n in admin.notifies(timeout=0.5)]
    assert [json.loads(n.payload) for n in got] == [{"a": 50, "b": 1}]
    assert "secret" not in got[0].payload

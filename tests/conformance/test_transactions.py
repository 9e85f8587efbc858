"""Transactional enqueue (SQLite and PostgreSQL): ``connection=`` makes the job part of the
caller's transaction. Redis refuses it with UnsupportedError and stores nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest

import conveyor
from conveyor import JobSpec, JobState
from tests.conformance._util import total
from tests.conftest import PG_URL, Store

# Transactional enqueue exists on SQLite and PostgreSQL; Redis refuses it (tested below).
# The backend fixture is narrowed per test instead of skipping, so nothing skips in CI.
WITH_TRANSACTIONS = pytest.mark.parametrize("backend_name", ["sqlite", "postgres"], indirect=True)
REDIS_ONLY = pytest.mark.parametrize("backend_name", ["redis"], indirect=True)


class CallerTx:
    """The application's own open transaction on the same database, with a table of its own."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn: Any = None

    async def open(self) -> None:
        if self.store.backend == "sqlite":
            self.conn = sqlite3.connect(self.store.url[len("sqlite:///") :], timeout=30)
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS app_orders (id INTEGER PRIMARY KEY, note TEXT)"
            )
            self.conn.commit()
            self.conn.execute("INSERT INTO app_orders (note) VALUES ('in the transaction')")
        else:
            import psycopg

            self.conn = await psycopg.AsyncConnection.connect(PG_URL)
            table = f'"{self.store.token}_orders"'
            await self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS public.{table} (id serial, note text)"
            )
            await self.conn.commit()
            await self.conn.execute(
                f"INSERT INTO public.{table} (note) VALUES ('in the transaction')"
            )

    async def commit(self) -> None:
        if self.store.backend == "sqlite":
            self.conn.commit()
        else:
            await self.conn.commit()

    async def rollback(self) -> None:
        if self.store.backend == "sqlite":
            self.conn.rollback()
        else:
            await self.conn.rollback()

    async def app_rows(self) -> int:
        if self.store.backend == "sqlite":
            return int(self.conn.execute("SELECT count(*) FROM app_orders").fetchone()[0])
        cur = await self.conn.execute(f'SELECT count(*) FROM public."{self.store.token}_orders"')
        row = await cur.fetchone()
        await self.conn.commit()
        return int(row[0])

    async def close(self) -> None:
        if self.store.backend == "sqlite":
            self.conn.close()
        else:
            await self.conn.rollback()
            await self.conn.execute(f'DROP TABLE IF EXISTS public."{self.store.token}_orders"')
            await self.conn.commit()
            await self.conn.close()


@pytest.fixture
async def tx(store: Store, queue: conveyor.Queue) -> AsyncIterator[CallerTx]:
    """Opened after ``queue`` (migrated, WAL on), like an application's request would be."""
    t = CallerTx(store)
    await t.open()
    yield t
    await t.close()


@WITH_TRANSACTIONS
async def test_committed_enqueue_appears_only_after_commit(
    tx: CallerTx, queue: conveyor.Queue
) -> None:
    ran: list[int] = []

    @queue.job("tx-job")
    async def handler(payload: object, ctx: conveyor.Context) -> None:
        ran.append(ctx.job_id)

    job_id = await queue.enqueue(
        "tx-job", {"order": 1}, connection=tx.conn, idempotency_key="order-1"
    )
    assert isinstance(job_id, int)
    # Not committed yet: nobody else sees it.
    assert await queue.get_job(job_id) is None
    assert await total(queue) == 0
    assert await queue.list_jobs() == []
    if tx.store.backend == "postgres":  # (SQLite: the open write transaction blocks other writers)
        assert await queue.worker().run_once() == 0
    await tx.commit()
    job = await queue.get_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.payload == {"order": 1}
    assert await tx.app_rows() == 1
    assert await queue.worker().run_once() == 1
    assert ran == [job_id]
    assert await queue.enqueue("tx-job", None, idempotency_key="order-1") == job_id


@WITH_TRANSACTIONS
async def test_rolled_back_enqueue_never_existed(tx: CallerTx, queue: conveyor.Queue) -> None:
    job_id = await queue.enqueue(
        "tx-job", {"order": 2}, connection=tx.conn, idempotency_key="order-2"
    )
    ids = await queue.enqueue_many(
        [JobSpec("tx-job", 1), JobSpec("tx-job", 2, delay=60)], connection=tx.conn
    )
    await tx.rollback()
    assert await tx.app_rows() == 0
    for i in (job_id, *ids):
        assert await queue.get_job(i) is None
        assert await queue.get_job_events(i) == []
    assert await total(queue) == 0
    assert await queue.worker().run_once() == 0
    # The key of a rolled-back enqueue is free again.
    again = await queue.enqueue("tx-job", {"order": 2}, idempotency_key="order-2")
    assert (await queue.get_job(again)).payload == {"order": 2}  # type: ignore[union-attr]


@WITH_TRANSACTIONS
async def test_enqueue_many_in_a_transaction_commits_together(
    tx: CallerTx, queue: conveyor.Queue
) -> None:
    ids = await queue.enqueue_many(
        [JobSpec("a", 1), JobSpec("b", 2, tags=["t"])], connection=tx.conn
    )
    assert await total(queue) == 0
    await tx.commit()
    assert [j.id for j in await queue.list_jobs()] == sorted(ids, reverse=True)


@WITH_TRANSACTIONS
async def test_invalid_spec_in_a_transaction_writes_nothing(
    tx: CallerTx, queue: conveyor.Queue
) -> None:
    with pytest.raises(conveyor.ValidationError):
        await queue.enqueue_many([JobSpec("a", 1), JobSpec("a", object())], connection=tx.conn)
    await tx.commit()
    assert await total(queue) == 0


@WITH_TRANSACTIONS
async def test_enqueue_sync_in_a_sync_transaction(store: Store, queue: conveyor.Queue) -> None:
    if store.backend == "sqlite":
        conn: Any = sqlite3.connect(
            store.url[len("sqlite:///") :], timeout=30, check_same_thread=False
        )
    else:
        import psycopg

        conn = await asyncio.to_thread(psycopg.Connection.connect, PG_URL)
    try:
        job_id = await asyncio.to_thread(queue.enqueue_sync, "sync-tx", {"s": 1}, connection=conn)
        assert await queue.get_job(job_id) is None
        await asyncio.to_thread(conn.rollback)
        assert await queue.get_job(job_id) is None
        job_id = await asyncio.to_thread(queue.enqueue_sync, "sync-tx", {"s": 2}, connection=conn)
        await asyncio.to_thread(conn.commit)
        job = await queue.get_job(job_id)
        assert job is not None and job.payload == {"s": 2}
    finally:
        await asyncio.to_thread(conn.close)


async def test_wrong_connection_type_is_refused(store: Store, queue: conveyor.Queue) -> None:
    expected = conveyor.UnsupportedError if store.backend == "redis" else conveyor.ConveyorError
    with pytest.raises(expected):
        await queue.enqueue("x", None, connection="not a connection")
    assert await total(queue) == 0


@REDIS_ONLY
async def test_redis_refuses_connection(store: Store, queue: conveyor.Queue) -> None:
    with pytest.raises(conveyor.UnsupportedError, match=r"(?i)redis"):
        await queue.enqueue("x", None, connection=object())
    with pytest.raises(conveyor.UnsupportedError):
        await queue.enqueue_many([JobSpec("x")], connection=object())
    with pytest.raises(conveyor.UnsupportedError):
        await asyncio.to_thread(queue.enqueue_sync, "x", None, connection=object())
    assert await total(queue) == 0

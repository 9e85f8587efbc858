"""Connection faults: terminated backends, a server that does not answer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.errors import BackendError
from conveyor.settings import Settings
from tests.integration.postgres.conftest import MakeBackend
from tests.integration.postgres.helpers import (
    claim_params,
    done,
    enqueue,
    eventually,
    new_job,
    read_events,
)


async def _pids(admin: psycopg.AsyncConnection[Any], app: str) -> set[int]:
    cur = await admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", [app])
    return {row[0] for row in await cur.fetchall()}


async def _terminate(admin: psycopg.AsyncConnection[Any], pids: set[int]) -> None:
    for pid in pids:
        await admin.execute("SELECT pg_terminate_backend(%s)", [pid])


async def _listener_ready(
    admin: psycopg.AsyncConnection[Any], app: str, not_pids: set[int]
) -> bool:
    cur = await admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        " AND (query LIKE 'LISTEN%%' OR query = 'SELECT 1')",
        [f"{app}:listen"],
    )
    return bool({row[0] for row in await cur.fetchall()} - not_pids)


async def _recovers(backend: PostgresBackend) -> bool:
    try:
        await backend.counts(None)
        return True
    except BackendError:
        return False


async def test_terminated_pool_connections_recover(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    app = f"{schema}-pool"
    backend = await new_backend(app=app)
    await asyncio.gather(*(backend.counts(None) for _ in range(4)))  # open a few
    old = await _pids(admin, app)
    assert old
    await _terminate(admin, old)
    start = time.monotonic()
    # Idle connections that died are swapped before use; either way nothing hangs and
    # the next calls work by themselves.
    try:
        await backend.counts(None)
    except BackendError:
        pass
    assert time.monotonic() - start < 5
    await eventually(lambda: _recovers(backend))
    [job_id] = await enqueue(backend, new_job())
    assert await backend.get_job(job_id) is not None
    assert not old & await _pids(admin, app)


async def test_call_on_a_connection_killed_mid_statement_raises_backend_error(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    app = f"{schema}-busy"
    backend = await new_backend(app=app)
    [job_id] = await enqueue(backend, new_job())
    await backend.claim(claim_params(token="t"))
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as locker:
        await locker.execute(f'SELECT 1 FROM "{schema}".jobs WHERE id = %s FOR UPDATE', [job_id])
        task = asyncio.create_task(backend.complete_many([done(job_id, "t")]))
        blocked = await eventually(lambda: _blocked_pid(admin, app))
        await _terminate(admin, {blocked})
        with pytest.raises(BackendError):
            await asyncio.wait_for(task, 5)
        await locker.rollback()
    await eventually(lambda: _recovers(backend))
    assert await backend.complete_many([done(job_id, "t")]) == [True]


async def _blocked_pid(admin: psycopg.AsyncConnection[Any], app: str) -> int | None:
    cur = await admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
        [app],
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def test_listener_reconnects_and_wakes_on_new_work(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    app = f"{schema}-worker"
    worker = await new_backend(app=app)
    producer = await new_backend()
    await worker.wait_for_work(0)  # the first wait starts the LISTEN connection
    await eventually(lambda: _listener_ready(admin, app, set()))
    for _ in range(2):  # terminate the listener (and the pool) twice in a row
        old = await _pids(admin, f"{app}:listen") | await _pids(admin, app)
        await _terminate(admin, old)
        await eventually(lambda old=old: _listener_ready(admin, app, old))  # type: ignore[misc]
        await worker.wait_for_work(0)  # the reconnect itself wakes waiters once
        start = time.monotonic()
        waiting = asyncio.create_task(worker.wait_for_work(10))
        await asyncio.sleep(0.05)
        await enqueue(producer, new_job())
        await asyncio.wait_for(waiting, 10)
        assert time.monotonic() - start < 5
        assert len(await worker.claim(claim_params(token=f"t{time.monotonic()}"))) == 1


async def test_wake_is_thread_safe(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    backend = await new_backend(app=f"{schema}-w")
    await backend.wait_for_work(0)  # starts the LISTEN connection
    await eventually(lambda: _listener_ready(admin, f"{schema}-w", set()))
    await backend.wait_for_work(5)  # forget the listener's connect wake-up (sure to come)
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    waiting = asyncio.create_task(backend.wait_for_work(10))
    await asyncio.sleep(0.02)
    await loop.run_in_executor(None, backend.wake)
    await asyncio.wait_for(waiting, 5)
    assert time.monotonic() - start < 5
    # a wake with nobody waiting is kept for the next wait
    await loop.run_in_executor(None, backend.wake)
    start = time.monotonic()
    await backend.wait_for_work(10)
    assert time.monotonic() - start < 1


async def test_unreachable_server_fails_fast_with_backend_error(schema: str) -> None:
    settings = Settings.resolve(
        url="postgresql://postgres@127.0.0.1:1/test?pool_timeout=2", schema=schema, env={}
    )
    backend = PostgresBackend(settings)
    start = time.monotonic()
    with pytest.raises(BackendError):
        await backend.connect()
    assert time.monotonic() - start < 5
    with pytest.raises(BackendError):
        await backend.counts(None)  # not connected: still a BackendError


async def test_a_producer_opens_no_listen_connection(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """Enqueue-only processes neither hold a LISTEN connection nor hear their own
    NOTIFYs; the first wait for work (or events) opens it."""
    app = f"{schema}-producer"
    producer = await new_backend(app=app)
    await enqueue(producer, new_job())
    await enqueue(producer, new_job(), new_job())
    assert await _pids(admin, app)  # the pool is connected
    assert await _pids(admin, f"{app}:listen") == set()
    await producer.wait_for_work(0)
    await eventually(lambda: _listener_ready(admin, app, set()))
    reader = await new_backend(app=f"{app}-reader")
    await read_events(reader, None, 0, 0)
    await eventually(lambda: _listener_ready(admin, f"{app}-reader", set()))

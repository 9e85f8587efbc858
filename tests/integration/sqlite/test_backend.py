"""What only the SQLite backend promises: it opens its connection by itself on every entry
point, one instance serves every event loop and thread (``shared_across_loops``), its
wake-ups reach every waiter, its two-stream event cursor loses nothing when a page is
cut, and another process's write lock never blocks the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.backends.base import ClaimParams, EnqueueParams, EventRead, NewJob
from conveyor.backends.sqlite.backend import SQLiteBackend
from conveyor.models import JobState
from conveyor.settings import Settings

NOW = 1_800_000_000.0


def new_job(name: str = "job") -> NewJob:
    return NewJob(
        name, "{}", JobState.QUEUED, NOW, 0, "default", 1, None, False, None, (), None, None
    )


def claim_params(limit: int = 10) -> ClaimParams:
    return ClaimParams("w1", "tok", limit, NOW, NOW + 30)


class Backends:
    """SQLiteBackends on one tmp_path file (several act like several processes)."""

    def __init__(self, path: Path) -> None:
        self.url = f"sqlite:///{path}"
        self.made: list[SQLiteBackend] = []

    def new(self) -> SQLiteBackend:
        """A backend on the file, never connected."""
        backend = SQLiteBackend(Settings.resolve(env={}, url=self.url))
        self.made.append(backend)
        return backend

    async def migrated(self) -> SQLiteBackend:
        backend = self.new()
        await backend.migrate()
        return backend


@pytest.fixture
async def backends(tmp_path: Path) -> AsyncIterator[Backends]:
    made = Backends(tmp_path / "sub" / "jobs.db")
    try:
        yield made
    finally:
        for backend in made.made:
            await backend.close()


async def waiting(backend: SQLiteBackend, count: int) -> None:
    """Until ``count`` wait_for_work calls are registered (so a wake() reaches them)."""
    for _ in range(5000):
        if len(backend._wakeups._waiters) >= count:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"{count} waiters never registered")


def test_capabilities() -> None:
    assert SQLiteBackend.supports_transactions is True
    assert SQLiteBackend.sync_enqueue is True
    assert SQLiteBackend.shared_across_loops is True


async def test_migrate_creates_the_file_without_connect(backends: Backends) -> None:
    backend = await backends.migrated()
    assert (await backend.counts(None))["queued"] == 0


async def test_migrate_adds_new_columns_to_an_existing_database(backends: Backends) -> None:
    """A file made before ``stalls`` / ``max_stalls`` existed gets them (its jobs with the
    defaults: no stall, one allowed); migrating again changes nothing."""
    old = backends.url.removeprefix("sqlite:///")
    Path(old).parent.mkdir(parents=True)
    with sqlite3.connect(old) as conn:
        conn.executescript(
            """CREATE TABLE conveyor_jobs (
                id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
                channel TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
                priority INTEGER NOT NULL, run_at REAL NOT NULL, created_at REAL NOT NULL,
                started_at REAL, finished_at REAL, attempts INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL, progress INTEGER NOT NULL DEFAULT 0,
                result TEXT, errors TEXT, tags TEXT, group_key TEXT, tenant TEXT,
                idempotency_key TEXT, options TEXT,
                remove_on_complete INTEGER NOT NULL DEFAULT 0, lease_token TEXT,
                lease_expires_at REAL, worker_id TEXT,
                cancel_requested INTEGER NOT NULL DEFAULT 0);
            INSERT INTO conveyor_jobs (name, channel, payload, state, priority, run_at,
                created_at, max_attempts)
            VALUES ('old', 'default', '{}', 'queued', 0, 1800000000.0, 1800000000.0, 1);"""
        )
    conn.close()
    backend = await backends.migrated()
    await backend.migrate()  # idempotent
    old_job = await backend.get_job(1)
    assert old_job is not None and (old_job.name, old_job.stalls) == ("old", 0)
    [new] = await backend.enqueue_many(EnqueueParams([new_job("new")], NOW))
    claimed = await backend.claim(claim_params())
    assert [(j.id, j.stalls, j.max_stalls) for j in claimed] == [(1, 0, 1), (new.id, 0, 1)]


async def test_sync_enqueue_from_a_plain_thread_on_a_never_connected_instance(
    backends: Backends,
) -> None:
    await (await backends.migrated()).close()
    fresh = backends.new()
    results: list[list[int]] = []

    def plain_thread() -> None:  # no event loop here, and connect() was never called
        for jobs in ([new_job("one")], [new_job("two"), new_job("three")]):
            results.append([r.id for r in fresh.enqueue_many_sync(EnqueueParams(jobs, NOW))])

    thread = threading.Thread(target=plain_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert results == [[1], [2, 3]]
    job = await fresh.get_job(2)
    assert job is not None and job.name == "two"


async def test_reopens_after_close(backends: Backends) -> None:
    backend = await backends.migrated()
    await backend.close()
    [result] = await backend.enqueue_many(EnqueueParams([new_job()], NOW))
    assert (await backend.get_job(result.id)) is not None


async def test_wake_reaches_every_waiter_on_the_loop(backends: Backends) -> None:
    backend = await backends.migrated()
    await backend.wait_for_work(0)  # consume the wake-up of migrate's writes, if any
    waiters = [asyncio.create_task(backend.wait_for_work(30)) for _ in range(3)]
    await waiting(backend, 3)
    backend.wake()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [[], [], []]


async def test_a_wake_with_nobody_waiting_ends_the_next_wait(backends: Backends) -> None:
    backend = await backends.migrated()
    backend.wake()
    assert await asyncio.wait_for(backend.wait_for_work(30), 5) == []


async def test_one_instance_serves_a_waiter_on_another_loop(backends: Backends) -> None:
    backend = await backends.migrated()
    claimed: list[int] = []

    def other_loop() -> None:
        async def work() -> None:
            await backend.wait_for_work(30)
            claimed.extend(j.id for j in await backend.claim(claim_params()))

        asyncio.run(work())

    thread = threading.Thread(target=other_loop)
    await backend.wait_for_work(0)  # no wake-up left over for the other loop's wait
    thread.start()
    await waiting(backend, 1)
    [result] = await backend.enqueue_many(EnqueueParams([new_job()], NOW))  # wakes it
    await asyncio.wait_for(asyncio.to_thread(thread.join), 5)
    assert claimed == [result.id]
    # and this loop still waits and wakes on the same instance
    task = asyncio.create_task(backend.wait_for_work(30))
    await waiting(backend, 1)
    backend.wake()
    assert await asyncio.wait_for(task, 5) == []


async def test_another_processs_commit_ends_a_wait(backends: Backends) -> None:
    backend = await backends.migrated()
    other = backends.new()
    await backend.wait_for_work(0)
    task = asyncio.create_task(backend.wait_for_work(30))
    await waiting(backend, 1)
    await other.enqueue_many(EnqueueParams([new_job()], NOW))  # other's wake() is not ours
    assert await asyncio.wait_for(task, 5) == []


async def test_a_cut_event_page_loses_nothing(backends: Backends) -> None:
    backend = await backends.migrated()
    head = (await backend.read_events(EventRead(None, 0, 0))).cursor
    ids = [r.id for r in await backend.enqueue_many(EnqueueParams([new_job()] * 3, NOW))]
    await backend.claim(claim_params())  # three stored "started" events after three rows

    seen: list[tuple[str, int]] = []
    cursor = head
    for _ in range(10):
        page = await backend.read_events(EventRead(cursor, 2, 0))
        assert len(page.events) <= 2
        if not page.events:
            break
        seen += [(e.type, e.job_id) for e in page.events]
        cursor = page.cursor
    assert sorted(seen) == sorted([("enqueued", i) for i in ids] + [("started", i) for i in ids])
    assert seen[:3] == [("enqueued", i) for i in ids]  # oldest first, enqueued first

    zero = await backend.read_events(EventRead(head, 0, 30))  # limit 0: the cursor, now
    assert zero.events == [] and zero.cursor == head


async def test_another_processs_write_lock_does_not_block_the_loop(
    backends: Backends, tmp_path: Path
) -> None:
    backend = await backends.migrated()
    holder = sqlite3.connect(tmp_path / "sub" / "jobs.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        task = asyncio.create_task(backend.enqueue_many(EnqueueParams([new_job()] * 2, NOW)))
        ticks = 0
        while ticks < 20:  # the loop keeps running while the enqueue retries
            await asyncio.sleep(0.005)
            ticks += 1
        assert not task.done()
        holder.execute("COMMIT")
        results = await asyncio.wait_for(task, 10)
        assert [r.id for r in results] == [1, 2]
    finally:
        holder.close()

"""What only the SQLite backend promises about workflows: a store made before them is
migrated, a plain completion runs exactly the statements it ran before (the markers come
back in its RETURNING), jobs waiting on dependencies stay out of the due-wait index,
cascades have no depth limit, and deletes take edges and batches with their jobs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.backends.base import EnqueueParams, NewBatch, ResumeParams
from conveyor.backends.sqlite.backend import SQLiteBackend
from conveyor.backends.sqlite.connection import Q
from conveyor.errors import ValidationError
from conveyor.models import JobState
from conveyor.settings import Settings
from tests.backends.helpers import (
    NOW,
    claim_ids,
    claim_params,
    enqueue,
    error,
    finish,
    get,
    new_job,
    outcome,
)

# conveyor_jobs as the release before workflows made it (no batch_id, deps_left, ...).
_PREVIOUS_JOBS = """CREATE TABLE conveyor_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, channel TEXT NOT NULL,
    payload TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('scheduled', 'queued',
    'running', 'waiting', 'completed', 'failed', 'cancelled')), priority INTEGER NOT NULL,
    run_at REAL NOT NULL, created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0, stalls INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL, max_stalls INTEGER NOT NULL DEFAULT 1,
    progress INTEGER NOT NULL DEFAULT 0, result TEXT, errors TEXT, tags TEXT, group_key TEXT,
    tenant TEXT, idempotency_key TEXT, options TEXT,
    remove_on_complete INTEGER NOT NULL DEFAULT 0, lease_token TEXT, lease_expires_at REAL,
    worker_id TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, wait_token TEXT);
INSERT INTO conveyor_jobs (name, channel, payload, state, priority, run_at, created_at,
    max_attempts) VALUES ('old', 'default', '{}', 'queued', 0, 1800000000.0, 1800000000.0, 3);
"""


@pytest.fixture
async def path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
async def backend(path: Path) -> AsyncIterator[SQLiteBackend]:
    made = SQLiteBackend(Settings.resolve(env={}, url=f"sqlite:///{path}"))
    await made.migrate()
    try:
        yield made
    finally:
        await made.close()


async def run_one(backend: SQLiteBackend, job_id: int, token: str, **kw: object) -> None:
    job = await get(backend, job_id)
    assert await claim_ids(backend, token=token, include=(job.name,)) == [job_id]
    await finish(backend, job_id, token, **kw)


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(sql).fetchall()
    conn.close()
    return rows


async def test_a_store_of_the_previous_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_PREVIOUS_JOBS)
    conn.close()
    made = SQLiteBackend(Settings.resolve(env={}, url=f"sqlite:///{path}"))
    try:
        await made.migrate()
        await made.migrate()  # idempotent
        [old] = await claim_ids(made, token="t")
        [after] = await enqueue(made, new_job("after", depends_on=(old,)))
        assert (await get(made, after)).state == JobState.WAITING
        await finish(made, old, "t")
        assert (await get(made, after)).state == JobState.QUEUED
    finally:
        await made.close()


async def test_a_plain_completion_runs_the_statements_it_always_ran(
    backend: SQLiteBackend,
) -> None:
    """Jobs without dependents or batch: no workflow statement in their transaction."""
    [a] = await enqueue(backend, new_job("plain"))
    assert await claim_ids(backend, token="t") == [a]
    statements: list[str] = []
    conn = backend._conn
    assert conn is not None
    conn.set_trace_callback(statements.append)
    try:
        await finish(backend, a, "t")
    finally:
        conn.set_trace_callback(None)
    assert len(statements) == 4, statements  # BEGIN, finish_many, the event, COMMIT
    assert not any("conveyor_dependencies" in s or "conveyor_batches" in s for s in statements)


async def test_jobs_waiting_on_dependencies_are_not_due_waits(
    path: Path, backend: SQLiteBackend
) -> None:
    [a] = await enqueue(backend, new_job("first"))
    [b] = await enqueue(backend, new_job("then", depends_on=(a,)))
    assert await backend.resume_due(ResumeParams(NOW + 10**6, 100)) == []
    assert (await get(backend, b)).state == JobState.WAITING
    with sqlite3.connect(path) as conn:
        plan = conn.execute("EXPLAIN QUERY PLAN " + Q["due_waiting"], {"now": NOW, "limit": 10})
        text = " | ".join(r[3] for r in plan)
    conn.close()
    assert text.startswith("SEARCH conveyor_jobs USING INDEX conveyor_jobs_waiting_due")


async def test_a_dependent_due_later_is_scheduled(backend: SQLiteBackend) -> None:
    [a] = await enqueue(backend, new_job("now"))
    [b] = await enqueue(backend, new_job("later", depends_on=(a,), run_at=NOW + 3600))
    await run_one(backend, a, "t")
    job = await get(backend, b)
    assert job.state == JobState.SCHEDULED and job.run_at.timestamp() == NOW + 3600


async def test_a_cascade_has_no_depth_limit(path: Path, backend: SQLiteBackend) -> None:
    chain = [new_job("link-0")] + [new_job(f"link-{i}", depends_on=(-i,)) for i in range(1, 1500)]
    ids = await enqueue(backend, *chain)
    await run_one(backend, ids[0], "t", state=JobState.FAILED, error=error())
    [(states,)] = _rows(path, "SELECT group_concat(DISTINCT state) FROM conveyor_jobs")
    assert states in ("failed,cancelled", "cancelled,failed")
    assert _rows(path, "SELECT count(*) FROM conveyor_dependencies WHERE resolved = 0") == [(0,)]


async def test_a_batch_counts_retries_once_and_merges_its_counts(backend: SQLiteBackend) -> None:
    """The shared batch scenario, its members named apart so each can be claimed alone."""
    callback = new_job("on-done", options='{"timeout": 5.0}')
    members = [new_job(f"member-{i}", batch_id="b") for i in range(3)]
    results = await backend.enqueue_many(
        EnqueueParams(members, NOW, batch=NewBatch("b", 3, callback))
    )
    ids = [r.id for r in results]
    await run_one(backend, ids[0], "t0")
    retry = {"state": JobState.QUEUED, "run_at": NOW, "error": error(), "event": "retrying"}
    await run_one(backend, ids[1], "t1", **retry)
    assert await backend.cancel(ids[2], NOW) == "cancelled"
    record = await backend.get_batch("b")
    assert record is not None and (record.state, record.callback_job_id) == ("running", None)
    await run_one(backend, ids[1], "t2", state=JobState.FAILED, error=error())
    record = await backend.get_batch("b")
    assert record is not None and record.callback_job_id is not None
    assert (record.completed, record.failed, record.cancelled, record.state) == (1, 1, 1, "done")
    cb = await get(backend, record.callback_job_id)
    assert cb.state == JobState.QUEUED and cb.timeout == 5.0
    assert [e.type for e in await backend.get_events(cb.id)] == ["enqueued"]
    # A member retried after the batch is done is no member any more.
    assert (await backend.retry(ids[1], NOW)).outcome == "retried"
    await run_one(backend, ids[1], "t3")
    again = await backend.get_batch("b")
    assert again is not None and (again.completed, again.failed) == (1, 1)


async def test_deleting_an_unfinished_member_counts_it_cancelled(backend: SQLiteBackend) -> None:
    members = [new_job(f"m-{i}", batch_id="d") for i in range(2)]
    results = await backend.enqueue_many(
        EnqueueParams(members, NOW, batch=NewBatch("d", 2, new_job("cb")))
    )
    await run_one(backend, results[0].id, "t")
    await backend.delete_jobs([results[1].id], NOW)
    record = await backend.get_batch("d")
    assert record is not None and (record.completed, record.cancelled) == (1, 1)
    assert record.state == "done" and record.callback_job_id is not None
    await backend.delete_jobs([record.callback_job_id], NOW)
    assert await backend.get_batch("d") is None


async def test_a_removed_dependency_still_releases_and_reads_as_gone(
    path: Path, backend: SQLiteBackend
) -> None:
    [a] = await enqueue(backend, new_job("vanishing", remove_on_complete=True))
    [b] = await enqueue(backend, new_job("reader", depends_on=(a,)))
    assert await claim_ids(backend, token="t", include=("vanishing",)) == [a]
    assert await backend.complete_many([outcome(a, "t", result='"x"', remove=True)]) == [True]
    assert (await get(backend, b)).state == JobState.QUEUED
    assert await backend.dependency_results(b) == {a: None}
    await backend.delete_jobs([b], NOW)
    assert _rows(path, "SELECT count(*) FROM conveyor_dependencies") == [(0,)]


async def test_a_refused_enqueue_in_the_callers_transaction_stores_nothing(
    path: Path, backend: SQLiteBackend
) -> None:
    conn = sqlite3.connect(path)
    try:
        with pytest.raises(ValidationError):
            await backend.enqueue_many(
                EnqueueParams([new_job("x"), new_job("y", depends_on=(-2,))], NOW, conn)
            )
        conn.rollback()
    finally:
        conn.close()
    assert _rows(path, "SELECT count(*) FROM conveyor_jobs") == [(0,)]


async def test_concurrent_enqueues_in_a_window_make_one_job(path: Path) -> None:
    backends = [SQLiteBackend(Settings.resolve(env={}, url=f"sqlite:///{path}")) for _ in range(3)]
    await backends[0].migrate()
    try:
        job = new_job("u", idempotency_key="k", unique_for=60.0)
        results = await asyncio.gather(
            *(b.enqueue_many(EnqueueParams([job], NOW)) for b in backends for _ in range(5))
        )
        assert len({r[0].id for r in results}) == 1
        assert sum(r[0].created for r in results) == 1
    finally:
        for b in backends:
            await b.close()


async def test_a_callback_carries_its_batch_and_counts(backend: SQLiteBackend) -> None:
    cb = new_job("cb-opts")
    results = await backend.enqueue_many(
        EnqueueParams([new_job("solo", batch_id="o")], NOW, batch=NewBatch("o", 1, cb))
    )
    await run_one(backend, results[0].id, "t", state=JobState.CANCELLED, event="cancelled")
    record = await backend.get_batch("o")
    assert record is not None and record.callback_job_id is not None
    job = await get(backend, record.callback_job_id)
    assert job.state == JobState.QUEUED
    [claimed] = await backend.claim(claim_params(token="c", include=("cb-opts",)))
    assert json.loads(claimed.options or "{}")["batch"] == {
        "id": "o",
        "total": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
    }

"""What only the SQLite backend promises about the operations surface: throughput reads the
finished index and puts a job finished on a bucket's bound in that bucket whatever the
float rounding, dead workers' rows do not pile up, every read event's id resumes right
after it even when the two event sources interleave out of time order, and name
prefixes compare case-sensitively, character by character."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.backends.base import (
    EnqueueParams,
    EventRead,
    JobFilter,
    NewToken,
    Outcome,
    StepSave,
    ThroughputParams,
    WorkerRecord,
)
from conveyor.backends.sqlite.backend import SQLiteBackend
from conveyor.backends.sqlite.connection import Q
from conveyor.models import JobState
from conveyor.settings import Settings
from tests.backends.helpers import claim_params, new_job

NOW = 1_800_000_000.1  # not a round number: bucket bounds are not exact in binary


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


async def _enqueue(backend: SQLiteBackend, *names: str, now: float = NOW) -> list[int]:
    results = await backend.enqueue_many(
        EnqueueParams([new_job(n, run_at=now, state=JobState.QUEUED) for n in names], now)
    )
    return [r.id for r in results]


async def _finish(backend: SQLiteBackend, job_id: int, name: str, at: float) -> None:
    [claimed] = await backend.claim(claim_params(token=name, now=NOW, include=(name,)))
    assert claimed.id == job_id
    done = Outcome(job_id, name, JobState.COMPLETED, at, "completed")
    assert await backend.complete_many([done]) == [True]


def _worker(worker_id: str, expires_at: float, last_seen: float = NOW) -> WorkerRecord:
    return WorkerRecord(worker_id, "h", 1, None, 1, (), NOW, last_seen, expires_at)


async def test_throughput_seeks_the_finished_index(path: Path, backend: SQLiteBackend) -> None:
    with sqlite3.connect(path) as conn:
        args = {"since": NOW, "bucket": 60.0, "buckets": 30}
        plan = " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + Q["throughput"], args))
    conn.close()
    assert "conveyor_jobs_finished (state=? AND finished_at>? AND finished_at<?)" in plan
    assert "SCAN j" not in plan


async def test_a_job_finished_on_a_bound_is_in_the_later_bucket(backend: SQLiteBackend) -> None:
    bucket = 0.1
    # NOW + 1 * 0.1 - NOW is a hair under 0.1: a floor of (finished_at - since) / bucket
    # would put these in the bucket before the one whose bound they are on.
    at = [NOW + 1 * bucket, NOW + 7 * bucket]
    assert int((at[0] - NOW) / bucket) == 0
    ids = await _enqueue(backend, "a", "b")
    for job_id, name, when in zip(ids, ["a", "b"], at, strict=True):
        await _finish(backend, job_id, name, when)
    got = await backend.throughput(ThroughputParams(since=NOW, bucket=bucket, buckets=8))
    assert [(b.index, b.completed) for b in got] == [(1, 1), (7, 1)]
    assert await backend.throughput(ThroughputParams(NOW, bucket, 0)) == []
    assert await backend.throughput(ThroughputParams(NOW, bucket, 7)) == [got[0]]  # 7 is out


async def test_a_registration_forgets_dead_workers(path: Path, backend: SQLiteBackend) -> None:
    await backend.register_worker(_worker("dead", expires_at=NOW + 10))
    await backend.register_worker(_worker("alive", expires_at=NOW + 100))
    await backend.register_worker(_worker("alive", expires_at=NOW + 120, last_seen=NOW + 10))
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT id FROM conveyor_workers").fetchall()
    conn.close()
    assert rows == [("alive",)]
    await backend.remove_worker("alive")
    assert await backend.list_workers(NOW) == []


async def test_event_ids_resume_after_each_event_of_an_interleaved_page(
    backend: SQLiteBackend,
) -> None:
    start = (await backend.read_events(EventRead(None, 0, 0))).cursor
    a, b = await _enqueue(backend, "a", "b")
    await _finish(backend, a, "a", NOW + 100)  # stored out of time order with b's
    await _finish(backend, b, "b", NOW + 50)
    [c] = await _enqueue(backend, "c", now=NOW + 60)
    page = (await backend.read_events(EventRead(start, 100, 0))).events
    assert len(page) == 7  # 3 enqueued (job rows), 2 started, 2 completed (event rows)
    for i, event in enumerate(page):
        rest = (await backend.read_events(EventRead(event.id, 100, 0))).events
        assert [(e.type, e.job_id) for e in rest] == [(e.type, e.job_id) for e in page[i + 1 :]]
    assert {e.job_id for e in page} == {a, b, c}
    assert all(e.id is None for e in await backend.get_events(a))  # no stream position


async def test_name_prefixes_are_case_sensitive_and_counted_in_characters(
    backend: SQLiteBackend,
) -> None:
    report, upper, accent = await _enqueue(backend, "report", "Report", "éé-x")

    async def ids(prefix: str) -> set[int]:
        return {j.id for j in await backend.list_jobs(JobFilter(name_prefix=prefix))}

    assert await ids("rep") == {report}
    assert await ids("Rep") == {upper}
    assert await ids("éé") == {accent}
    assert await ids("é-") == set()
    assert await ids("reportage") == set()
    assert await ids("") == {report, upper, accent}


async def test_deleting_a_waiting_job_takes_its_pending_token(backend: SQLiteBackend) -> None:
    [job_id] = await _enqueue(backend, "w")
    await backend.claim(claim_params(token="tw", now=NOW))
    assert await backend.save_step(StepSave(job_id, "tw", "s", "1", NOW, NewToken("tk", None)))
    wait = Outcome(
        job_id, "tw", JobState.WAITING, NOW, "waiting", run_at=NOW + 60, wait_token="tk",
        refund_attempt=True,
    )  # fmt: skip
    assert await backend.complete_many([wait]) == [True]
    [removed] = await backend.delete_jobs([job_id, job_id], NOW)
    assert (removed.id, removed.name, removed.attempts) == (job_id, "w", 0)
    assert await backend.get_token("tk") is None and await backend.list_tokens(job_id) == []

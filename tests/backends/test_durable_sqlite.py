"""What only the SQLite backend promises about durable execution: a store made before it
existed is migrated (twice is a no-op), due waits are found through their own partial
index and never through the claim's, and a wait on a token in a mixed batch is decided
in the batch's one write transaction."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conveyor.backends.base import (
    NEVER,
    ClaimParams,
    EnqueueParams,
    NewJob,
    NewToken,
    Outcome,
    ProgressUpdate,
    ResumeParams,
    StepSave,
    TokenCompletion,
)
from conveyor.backends.sqlite.backend import SQLiteBackend
from conveyor.backends.sqlite.connection import Q
from conveyor.models import JobState
from conveyor.settings import Settings

NOW = 1_800_000_000.0

# conveyor_jobs as the release before durable execution made it (no wait_token).
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
    worker_id TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0);
INSERT INTO conveyor_jobs (name, channel, payload, state, priority, run_at, created_at,
    max_attempts) VALUES ('old', 'default', '{}', 'queued', 0, 1800000000.0, 1800000000.0, 3);
"""


def new_job(name: str = "job") -> NewJob:
    return NewJob(
        name, "{}", JobState.QUEUED, NOW, 0, "default", 3, None, False, None, (), None, None
    )


def claim_params(token: str = "tok", limit: int = 10) -> ClaimParams:
    return ClaimParams("w1", token, limit, NOW, NOW + 30)


def wait(job_id: int, until: float, wait_token: str | None = None) -> Outcome:
    return Outcome(
        job_id, "tok", JobState.WAITING, NOW, "waiting", run_at=until, refund_attempt=True,
        wait_token=wait_token, event_data=json.dumps({"reason": "wait"}),
    )  # fmt: skip


@pytest.fixture
async def path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
async def backend(path: Path) -> AsyncIterator[SQLiteBackend]:
    made = SQLiteBackend(Settings.resolve(env={}, url=f"sqlite:///{path}"))
    try:
        yield made
    finally:
        await made.close()


def _names(path: Path, kind: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))
        return {r[0] for r in rows}


async def test_a_store_of_the_previous_schema_is_migrated(
    path: Path, backend: SQLiteBackend
) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(_PREVIOUS_JOBS)
    conn.close()
    await backend.migrate()
    await backend.migrate()  # idempotent
    assert {"conveyor_steps", "conveyor_tokens"} <= _names(path, "table")
    assert "conveyor_jobs_waiting" in _names(path, "index")
    assert "conveyor_jobs_deleted" in _names(path, "trigger")
    [old] = await backend.claim(claim_params())
    assert old.name == "old"
    save = StepSave(old.id, "tok", "t", '"x"', NOW, NewToken("tk", NOW + 60))
    assert await backend.save_step(save)
    assert await backend.complete_many([wait(old.id, NOW + 60, "tk")]) == [True]
    job = await backend.get_job(old.id)
    assert job is not None and (job.state, job.wait_token) == ("waiting", "tk")
    done = await backend.complete_token(TokenCompletion("tk", "1", NOW + 1))
    assert (done.completed, done.resumed) == (True, True)


def _plan(conn: sqlite3.Connection, query: str, args: dict[str, object]) -> str:
    return " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + Q[query], args))


async def test_due_waits_are_found_through_their_own_index_only(
    path: Path, backend: SQLiteBackend
) -> None:
    await backend.migrate()
    with sqlite3.connect(path) as conn:
        claim = {"now": NOW, "channels": None, "include": None, "exclude": None, "scan": 20}
        claim_plan = _plan(conn, "claim_candidates", claim)
        assert "USING INDEX conveyor_jobs_ready" in claim_plan
        assert "waiting" not in claim_plan
        due_plan = _plan(conn, "due_waiting", {"now": NOW, "limit": 10})
        assert due_plan.startswith("SEARCH conveyor_jobs USING INDEX conveyor_jobs_waiting")
    conn.close()


async def test_a_token_wait_in_a_mixed_batch(backend: SQLiteBackend) -> None:
    """One batch: a completion, a sleep, a wait on a pending token and one on a token
    completed meanwhile (that one resumes at once and keeps its progress, like a wait)."""
    await backend.migrate()
    ids = [r.id for r in await backend.enqueue_many(EnqueueParams([new_job()] * 4, NOW))]
    assert [j.id for j in await backend.claim(claim_params())] == ids
    done, sleeps, waits, resumes = ids
    for job_id, token in ((waits, "pending"), (resumes, "early")):
        assert await backend.save_step(
            StepSave(job_id, "tok", "t", "1", NOW, NewToken(token, None))
        )
    assert await backend.set_progress(ProgressUpdate(resumes, "tok", 40, NOW))
    assert (await backend.complete_token(TokenCompletion("early", "2", NOW))).completed
    outcomes = [
        Outcome(done, "tok", JobState.COMPLETED, NOW, "completed", result="1"),
        wait(sleeps, NOW + 60),
        wait(waits, NEVER, "pending"),
        wait(resumes, NOW + 60, "early"),
    ]
    assert await backend.complete_many(outcomes) == [True] * 4
    jobs = [await backend.get_job(i) for i in ids]
    assert [(j.state, j.wait_token, j.attempts) for j in jobs if j is not None] == [
        ("completed", None, 1),
        ("waiting", None, 0),
        ("waiting", "pending", 0),
        ("queued", None, 0),
    ]
    assert jobs[3] is not None and jobs[3].progress == 40
    events = await backend.get_events(resumes)
    assert (events[-1].type, dict(events[-1].data)) == ("resumed", {"reason": "token"})
    [due] = await backend.resume_due(ResumeParams(NOW + 60, 10))
    assert due.id == sleeps  # the token wait has no timeout: it is never due

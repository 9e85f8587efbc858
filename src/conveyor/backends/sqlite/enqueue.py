"""Enqueue on SQLite.

One job is one autocommit ``INSERT … RETURNING`` (atomic by itself); a batch is one
``INSERT … SELECT`` over a JSON array inside one transaction. ``connection=`` inserts
inside the caller's own transaction, which they commit or roll back. An idempotency key
that is taken inserts nothing (``ON CONFLICT DO NOTHING``) and hands back the first
job's id. No ``enqueued`` event is stored: the row is that event (``events.py``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from conveyor.backends.base import EnqueueParams, EnqueueResult, NewBatch, NewJob
from conveyor.backends.sqlite.connection import Q, SQLiteConnection
from conveyor.backends.sqlite.workflows import enqueue_workflow, is_workflow
from conveyor.errors import BackendError, ValidationError

__all__ = ["Enqueue", "insert_jobs"]


def insert_jobs(
    conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float, batch: NewBatch | None = None
) -> list[EnqueueResult]:
    """Insert ``jobs`` (inside the caller's transaction when there are several, or a
    workflow: dependencies, a batch, uniqueness windows; see ``workflows.py``).

    Reads result columns by index only: the caller's own connection (``connection=``)
    may lack the backend's row factory."""
    if is_workflow(jobs, batch):
        return enqueue_workflow(conn, jobs, now, batch)
    if len(jobs) > 1:
        return _insert_bulk(conn, jobs, now)
    return _insert_rows(conn, jobs, now)


def _existing(conn: sqlite3.Connection, job: NewJob) -> EnqueueResult:
    """The job that already holds ``job``'s idempotency key."""
    found = conn.execute(
        Q["find_idempotent"], {"tenant": job.tenant, "idempotency_key": job.idempotency_key}
    ).fetchone()
    if found is None:
        raise BackendError("insert conflicted but no job holds its idempotency key")
    return EnqueueResult(int(found[0]), False)


def _insert_bulk(
    conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float
) -> list[EnqueueResult]:
    """One INSERT … SELECT for the batch (inside the caller's transaction)."""
    rows = json.dumps(
        [
            {
                "name": j.name,
                "channel": j.channel,
                "payload": j.payload,
                "state": j.state.value,
                "priority": j.priority,
                "run_at": j.run_at,
                "max_attempts": j.max_attempts,
                "max_stalls": j.max_stalls,
                "tags": json.dumps(list(j.tags)) if j.tags else None,
                "group_key": j.group,
                "tenant": j.tenant,
                "idempotency_key": j.idempotency_key,
                "options": j.options,
                "remove_on_complete": int(j.remove_on_complete),
            }
            for j in jobs
        ]
    )
    inserted = conn.execute(Q["insert_jobs_bulk"], {"jobs": rows, "now": now}).fetchall()
    plain = iter(sorted(r[0] for r in inserted if r[2] is None))
    keyed = {(r[1] or "", r[2]): r[0] for r in inserted if r[2] is not None}
    seen: set[tuple[str, str]] = set()
    out: list[EnqueueResult] = []
    for job in jobs:
        if job.idempotency_key is None:
            out.append(EnqueueResult(next(plain), True))
            continue
        key = (job.tenant or "", job.idempotency_key)
        if key in keyed:
            out.append(EnqueueResult(keyed[key], key not in seen))
            seen.add(key)
            continue
        out.append(_existing(conn, job))
    return out


def _insert_rows(
    conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float
) -> list[EnqueueResult]:
    out: list[EnqueueResult] = []
    for job in jobs:
        row = conn.execute(
            Q["insert_job"],
            {
                "name": job.name,
                "channel": job.channel,
                "payload": job.payload,
                "state": job.state.value,
                "priority": job.priority,
                "run_at": job.run_at,
                "now": now,
                "max_attempts": job.max_attempts,
                "max_stalls": job.max_stalls,
                "tags": json.dumps(list(job.tags)) if job.tags else None,
                "group_key": job.group,
                "tenant": job.tenant,
                "idempotency_key": job.idempotency_key,
                "options": job.options,
                "remove_on_complete": int(job.remove_on_complete),
            },
        ).fetchone()
        if row is None:  # idempotency key taken: hand back the first job's id
            out.append(_existing(conn, job))
            continue
        out.append(EnqueueResult(int(row[0]), True))
    return out


def _enqueue_in(params: EnqueueParams) -> list[EnqueueResult]:
    """Insert inside the caller's open transaction; they commit or roll back."""
    conn = params.connection
    if not isinstance(conn, sqlite3.Connection):
        raise ValidationError(
            f"connection= must be a sqlite3.Connection for a SQLite queue, got {type(conn).__name__}"
        )
    try:
        if not conn.in_transaction:
            conn.execute("BEGIN")
        return insert_jobs(conn, params.jobs, params.now, params.batch)
    except sqlite3.Error as exc:
        raise BackendError(f"enqueue in the caller's transaction failed: {exc}") from exc


class Enqueue(SQLiteConnection):
    """``enqueue_many`` and ``enqueue_many_sync``."""

    async def enqueue_many(self, params: EnqueueParams) -> list[EnqueueResult]:
        if params.connection is not None:
            return _enqueue_in(params)
        # One job is one autocommit INSERT (atomic by itself); several share a transaction.
        single = len(params.jobs) == 1 and not is_workflow(params.jobs, params.batch)
        result = await self._run(
            lambda c: insert_jobs(c, params.jobs, params.now, params.batch), write=not single
        )
        self.wake()
        return result

    def enqueue_many_sync(self, params: EnqueueParams) -> list[EnqueueResult]:
        """In the calling thread, event loop or not; opens the connection if needed."""
        if params.connection is not None:
            return _enqueue_in(params)
        single = len(params.jobs) == 1 and not is_workflow(params.jobs, params.batch)
        result = self._run_sync(
            lambda c: insert_jobs(c, params.jobs, params.now, params.batch), write=not single
        )
        self.wake()
        return result

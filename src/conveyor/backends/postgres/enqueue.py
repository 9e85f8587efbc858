"""The enqueue of the PostgreSQL backend as a sans-I/O plan.

One plan drives the pool (async), the caller's ``AsyncConnection`` and the caller's sync
``Connection`` alike, so the idempotency logic exists once: the plan yields
``(sql, params)`` steps and receives each step's rows.

Usually a batch is one statement, picked by its shape (queries.sql): one job goes as a
typed single-row insert (``enqueue_one``), several as one JSON document
(``enqueue_batch``); either has a ``_keyed`` twin with ON CONFLICT, used only when a job
has an idempotency key. A statement that hits an idempotency key committed by a
concurrent transaction after its snapshot gets no id for that job; the plan then looks
the key up in a new statement (which sees the commit), and re-inserts keys whose job
vanished in between (a rolled-back or just-pruned first enqueue).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from psycopg import AsyncConnection, AsyncRawCursor, Connection, RawCursor
from psycopg.rows import tuple_row

from conveyor.backends.base import EnqueueParams, EnqueueResult, NewBatch, NewJob
from conveyor.backends.postgres import codec
from conveyor.backends.postgres.codec import dedupe_keys, notify_payload, queued_channels
from conveyor.backends.postgres.sqlfiles import Queries, native
from conveyor.backends.postgres.workflows import is_workflow, workflow_plan
from conveyor.errors import BackendError

__all__ = [
    "Plan",
    "drive",
    "drive_sync",
    "enqueue_plan",
    "insert_plan",
    "needs_transaction",
    "plan_for",
]

Rows = list[tuple[Any, ...]]
Step = tuple[str, dict[str, Any]]
Plan = Generator[Step, Rows, Any]

MAX_ROUNDS = 5  # insert/lookup rounds before giving up on a key that keeps vanishing


def needs_transaction(jobs: Sequence[NewJob]) -> bool:
    """Whether a pooled (autocommit) enqueue must run in a transaction: only a batch of
    several jobs with an idempotency key, or one with a ``remove_on_fail`` job, can need a
    second statement, and all of it must commit or roll back together; so does every
    enqueue with workflow fields (``workflows.py``)."""
    return (
        (len(jobs) > 1 and any(job.idempotency_key is not None for job in jobs))
        or any(job.remove_on_fail for job in jobs)
        or is_workflow(jobs)
    )


def enqueue_plan(
    queries: Queries,
    notify_channel: str,
    jobs: Sequence[NewJob],
    now: float,
    batch: NewBatch | None = None,
) -> Generator[Step, Rows, list[EnqueueResult]]:
    """Insert ``jobs`` (in order); returns one result per input, in input order. Jobs
    with dependencies, a batch or a uniqueness window go through ``workflows.py``, which
    inserts them with :func:`insert_plan`."""
    if batch is not None or is_workflow(jobs):
        return (
            yield from workflow_plan(
                queries,
                notify_channel,
                jobs,
                now,
                batch,
                lambda: insert_plan(queries, notify_channel, jobs, now),
            )
        )
    return (yield from insert_plan(queries, notify_channel, jobs, now))


def plan_for(
    queries: Queries, notify_channel: str, params: EnqueueParams
) -> Generator[Step, Rows, list[EnqueueResult]]:
    """:func:`enqueue_plan` for an enqueue's parameters (its jobs, time and batch)."""
    return enqueue_plan(queries, notify_channel, params.jobs, params.now, params.batch)


def insert_plan(
    queries: Queries, notify_channel: str, jobs: Sequence[NewJob], now: float
) -> Generator[Step, Rows, list[EnqueueResult]]:
    """Insert ``jobs`` (in order); returns one result per input, in input order."""
    if not jobs:
        return []
    unique, alias = dedupe_keys(jobs)
    results: dict[int, EnqueueResult] = {}
    pending = unique
    for _ in range(MAX_ROUNDS):
        notify = {
            "notify_channel": notify_channel,
            "notify": notify_payload(queued_channels(jobs, pending)),
        }
        got: dict[int, EnqueueResult] = {}
        single = jobs[pending[0]] if len(pending) == 1 else None
        if single is not None and single.idempotency_key is not None:
            rows = yield (
                queries["enqueue_one_keyed"],
                {**codec.job_args(single, now), **notify},
            )
            # the inserted row, else the job that held the key in the snapshot, else none
            if rows:
                job_id, created = max(rows, key=lambda row: bool(row[1]))
                got[pending[0]] = EnqueueResult(int(job_id), bool(created))
        elif single is not None and not single.remove_on_complete:
            rows = yield (queries["enqueue_one"], {**codec.job_args(single, now), **notify})
            got = codec.batch_results(pending, rows)
        elif any(jobs[i].idempotency_key is not None for i in pending):
            rows = yield (
                queries["enqueue_batch_keyed"],
                {"jobs": codec.jobs_json(jobs, pending, now), "now": now, **notify},
            )
            got = codec.keyed_batch_results(jobs, pending, rows)
        else:
            rows = yield (
                queries["enqueue_batch"],
                {"jobs": codec.jobs_json(jobs, pending, now), "now": now, **notify},
            )
            got = codec.batch_results(pending, rows)
        results.update(got)
        missing = [i for i in pending if i not in got]
        if not missing:
            break
        keys = {i: (jobs[i].tenant or "", jobs[i].idempotency_key or "") for i in missing}
        found_rows = yield (
            queries["enqueue_lookup"],
            {
                "tenants": [tenant for tenant, _ in keys.values()],
                "keys": [key for _, key in keys.values()],
            },
        )
        found = {(tenant, key): int(job_id) for tenant, key, job_id in found_rows}
        pending = []
        for i, key in keys.items():
            if key in found:
                results[i] = EnqueueResult(found[key], False)
            else:
                pending.append(i)
        if not pending:
            break
    else:
        raise BackendError("enqueue: an idempotency key kept conflicting with vanishing jobs")
    # A remove_on_fail job's row may vanish before its events (as a remove_on_complete
    # job's does): its `enqueued` event is stored, in the same transaction (see get_events).
    removable = [results[i].id for i in unique if jobs[i].remove_on_fail and results[i].created]
    if removable:
        yield (queries["store_enqueued"], {"ids": removable})
    out = []
    for i, first in enumerate(alias):
        result = results[first]
        out.append(result if first == i else EnqueueResult(result.id, False))
    return out


async def drive(conn: AsyncConnection[Any], plan: Plan) -> Any:
    """Run a plan on an async connection (pooled or the caller's). Statements go out
    with native ``$n`` placeholders through a raw cursor (:func:`~.sqlfiles.native`)."""
    try:
        step = next(plan)
        while True:
            sql, values = _native(step)
            async with AsyncRawCursor(conn, row_factory=tuple_row) as cur:
                await cur.execute(sql, values)
                rows = await cur.fetchall()
            step = plan.send(rows)
    except StopIteration as stop:
        return stop.value


def drive_sync(conn: Connection[Any], plan: Plan) -> Any:
    """Run a plan on the caller's sync connection."""
    try:
        step = next(plan)
        while True:
            sql, values = _native(step)
            with RawCursor(conn, row_factory=tuple_row) as cur:
                cur.execute(sql, values)
                rows = cur.fetchall()
            step = plan.send(rows)
    except StopIteration as stop:
        return stop.value


def _native(step: Step) -> tuple[str, list[Any]]:
    query, args = step
    sql, names = native(query)
    return sql, [args[name] for name in names]

"""Workflows on SQLite: dependencies, batches with a completion callback, uniqueness
windows (the contract: "Workflows" in :mod:`conveyor.backends.records`).

Storage:

- ``conveyor_dependencies``: one edge (dependent ``job_id``, ``depends_on``) per
  dependency, ``resolved`` once the dependency's final transition has counted it. The
  dependency's row carries ``dependents = 1`` while it may have unresolved edges, and
  the dependent's row ``deps_left`` (the dependencies it still waits on; NULL unless it
  waits on them) and ``on_dependency_failure`` (NULL on jobs without dependencies).
- ``conveyor_batches``: the counters, ``state`` and the callback job (a JSON
  :class:`NewJob`) until it is stored; members carry ``batch_id`` until counted; the
  callback job carries it too, so that deleting it deletes the batch (a trigger).

Every transition into ``completed`` / ``failed`` / ``cancelled`` (outcomes, cancel,
cancel_jobs) and every delete of an unfinished job hands the jobs that carry a marker
(``dependents`` or ``batch_id``) to :func:`settle`, inside the same ``BEGIN IMMEDIATE``
transaction. Jobs without one cost nothing more (their markers come back in the
transition's ``RETURNING``). Exactly once: SQLite runs one writer at a time, and every
step is conditional on what it consumes: an edge is resolved once (``resolved = 0``),
a dependent moves only while it is ``waiting`` with ``deps_left`` set, a member is
counted once (its ``batch_id`` cleared), and only the update that brings a batch's
count to its total sees it ``running`` and turns it ``done``, so the callback is stored
once. Cascades are a work list, to any depth.
"""

from __future__ import annotations

import json
import sqlite3
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from conveyor.backends.base import BatchRecord, EnqueueResult, NewBatch, NewJob, Outcome
from conveyor.backends.sql import load_queries
from conveyor.backends.sqlite.connection import Q, SQLiteConnection
from conveyor.errors import BackendError, ValidationError
from conveyor.models import JobState

__all__ = ["Workflows", "enqueue_workflow", "is_workflow", "settle", "settle_outcomes"]

W = load_queries("conveyor.backends.sqlite", "workflows.sql")

_FINAL = frozenset({"completed", "failed", "cancelled"})
_RESUMED = json.dumps({"reason": "dependencies"})

#: A job that reached its final state, for :func:`settle`: (id, how it ended:
#: completed / failed / cancelled / deleted, its ``dependents`` marker, its ``batch_id``).
Finished = tuple[int, str, Any, Any]


def is_workflow(jobs: Sequence[NewJob], batch: NewBatch | None) -> bool:
    """Whether an enqueue needs :func:`enqueue_workflow` (plain ones keep their fast path)."""
    if batch is not None:
        return True
    return any(
        j.depends_on
        or j.batch_id is not None
        or j.unique_for is not None
        or j.unique_states is not None
        for j in jobs
    )


# -- enqueue ---------------------------------------------------------------------------------
def _known_states(conn: sqlite3.Connection, jobs: Sequence[NewJob]) -> dict[int, str]:
    """The states of the stored jobs the call depends on; refuses unknown ids and
    references to no earlier job of the call, before anything is stored."""
    ids: set[int] = set()
    for i, job in enumerate(jobs):
        for ref in job.depends_on:
            if ref >= 1:
                ids.add(ref)
            elif ref == 0 or -ref > i:
                raise ValidationError(
                    f"dependency {ref} of job {i + 1} ({job.name!r}) names no earlier job "
                    "of the same call"
                )
    if not ids:
        return {}
    rows = conn.execute(W["job_states"], {"ids": json.dumps(sorted(ids))}).fetchall()
    known = {int(r[0]): str(r[1]) for r in rows}
    unknown = sorted(ids - known.keys())
    if unknown:
        raise ValidationError(f"unknown dependency ids {unknown}")
    return known


def _release_expired_key(conn: sqlite3.Connection, job: NewJob, now: float) -> None:
    """A uniqueness window: the job holding the key gives it up when it was created at
    or before ``now - unique_for``, or is in none of ``unique_states``."""
    if job.idempotency_key is None:
        return
    row = conn.execute(
        W["find_unique"], {"tenant": job.tenant, "idempotency_key": job.idempotency_key}
    ).fetchone()
    if row is None:
        return
    expired = job.unique_for is not None and row[2] <= now - job.unique_for
    if expired or (job.unique_states is not None and row[1] not in job.unique_states):
        conn.execute(W["release_key"], {"id": row[0]})


def _insert(
    conn: sqlite3.Connection,
    job: NewJob,
    now: float,
    state: str,
    deps_left: int | None = None,
    batch_id: str | None = None,
) -> int | None:
    """Insert one job; its id, or None when its idempotency key is taken."""
    row = conn.execute(
        W["insert_job"],
        {
            "name": job.name,
            "channel": job.channel,
            "payload": job.payload,
            "state": state,
            "priority": job.priority,
            "run_at": job.run_at,
            "now": now,
            "finished_at": now if state in _FINAL else None,
            "max_attempts": job.max_attempts,
            "max_stalls": job.max_stalls,
            "tags": json.dumps(list(job.tags)) if job.tags else None,
            "group_key": job.group,
            "tenant": job.tenant,
            "idempotency_key": job.idempotency_key,
            "options": job.options,
            "remove_on_complete": int(job.remove_on_complete),
            "batch_id": batch_id,
            "deps_left": deps_left,
            "on_dependency_failure": job.on_dependency_failure if job.depends_on else None,
        },
    ).fetchone()
    return None if row is None else int(row[0])


def _existing(conn: sqlite3.Connection, job: NewJob) -> tuple[int, str]:
    """The job that holds ``job``'s idempotency key, and its state."""
    row = conn.execute(
        W["find_unique"], {"tenant": job.tenant, "idempotency_key": job.idempotency_key}
    ).fetchone()
    if row is None:
        raise BackendError("insert conflicted but no job holds its idempotency key")
    return int(row[0]), str(row[1])


def enqueue_workflow(
    conn: sqlite3.Connection, jobs: Sequence[NewJob], now: float, batch: NewBatch | None
) -> list[EnqueueResult]:
    """Store ``jobs`` (and ``batch``) with their edges, each job's state decided from
    its dependencies' states, inside the caller's write transaction. Nothing is stored
    before every dependency is known."""
    known = _known_states(conn, jobs)
    if batch is not None:
        callback = None if batch.callback is None else _dump_job(batch.callback)
        args = {"id": batch.id, "total": batch.total, "now": now, "callback": callback}
        conn.execute(W["insert_batch"], args)
    out: list[EnqueueResult] = []
    stored: list[tuple[int, str]] = []  # (id, state) of each job of the call, for -k refs
    finished: list[Finished] = []
    events: list[dict[str, Any]] = []
    for job in jobs:
        if job.unique_for is not None or job.unique_states is not None:
            _release_expired_key(conn, job, now)
        deps: dict[int, str] = {}
        for ref in job.depends_on:
            dep_id, dep_state = (ref, known[ref]) if ref >= 1 else stored[-ref - 1]
            deps.setdefault(dep_id, dep_state)
        open_deps = [d for d, s in deps.items() if s not in _FINAL]
        failed = next((d for d, s in deps.items() if s in ("failed", "cancelled")), None)
        state, deps_left = job.state.value, None
        if failed is not None and job.on_dependency_failure != "run":
            state = JobState.CANCELLED.value
        elif open_deps:
            state, deps_left = JobState.WAITING.value, len(open_deps)
        batch_id = job.batch_id
        job_id = _insert(conn, job, now, state, deps_left, batch_id)
        if job_id is None:  # idempotency key taken: the first job stands, as it is
            existing = _existing(conn, job)
            out.append(EnqueueResult(existing[0], False))
            stored.append(existing)
            continue
        out.append(EnqueueResult(job_id, True))
        stored.append((job_id, state))
        if deps:
            # Only a waiting job's edges to unfinished dependencies are left to resolve.
            waits = state == JobState.WAITING.value
            edges = [[d, int(not waits or s in _FINAL)] for d, s in deps.items()]
            conn.execute(W["insert_edges"], {"job_id": job_id, "edges": json.dumps(edges)})
            if waits:
                conn.execute(W["mark_dependents"], {"ids": json.dumps(open_deps)})
        if state == JobState.CANCELLED.value:
            data = {"reason": "dependency_failed", "dependency": failed}
            events.append(_event(job_id, "cancelled", job.name, job.tenant, 0, now, data))
            finished.append((job_id, "cancelled", 0, batch_id))
    if events:
        conn.executemany(Q["insert_event"], events)
    settle(conn, finished, now)
    if batch is not None and batch.total <= 0:
        row = conn.execute(W["close_batch"], {"id": batch.id}).fetchone()
        if row is not None:
            _store_callback(conn, batch.id, row, now)
    return out


# -- transitions -----------------------------------------------------------------------------
def _event(
    job_id: int,
    type_: str,
    name: str,
    tenant: str | None,
    attempt: int,
    at: float,
    data: dict[str, Any] | str | None,
) -> dict[str, Any]:
    text = data if isinstance(data, str) or data is None else json.dumps(data)
    return {
        "job_id": job_id,
        "type": type_,
        "job_name": name,
        "tenant": tenant,
        "attempt": attempt,
        "at": at,
        "data": text,
    }


def settle(conn: sqlite3.Connection, finished: Iterable[Finished], now: float) -> bool:
    """Resolve what these final transitions (or deletes) decide, in the caller's write
    transaction: count batch members (storing a callback once a batch is full) and move
    the dependents still waiting on them, cascading cancellations to any depth. Whether
    a job became queued or scheduled (or a callback was stored): waiters should look."""
    work = deque(f for f in finished if f[2] or f[3] is not None)
    woke = False
    while work:
        job_id, kind, dependents, batch_id = work.popleft()
        if batch_id is not None:
            woke = _count(conn, job_id, kind, batch_id, now) or woke
        if not dependents:
            continue
        args = {"id": job_id, "ok": int(kind == "completed"), "now": now}
        moved = conn.execute(W["resolve_dependents"], args).fetchall()
        conn.execute(W["resolve_edges"], {"id": job_id})
        events = []
        for r in moved:
            state = r[1]
            if state == JobState.CANCELLED.value:
                data = {"reason": "dependency_failed", "dependency": job_id}
                events.append(_event(r[0], "cancelled", r[2], r[3], r[4], now, data))
                work.append((r[0], "cancelled", r[5], r[6]))
            elif state != JobState.WAITING.value:
                events.append(_event(r[0], "resumed", r[2], r[3], r[4], now, _RESUMED))
                woke = True
        if events:
            conn.executemany(Q["insert_event"], events)
    return woke


def settle_outcomes(
    conn: sqlite3.Connection, outcomes: Sequence[Outcome], marked: Sequence[tuple[int, Any, Any]]
) -> bool:
    """:func:`settle` for the applied outcomes of jobs with a marker (``marked``: id,
    ``dependents``, ``batch_id``) that ended them (completed, failed, cancelled)."""
    ends = {o.job_id: o for o in outcomes}
    woke = False
    for job_id, dependents, batch_id in marked:
        o = ends[job_id]
        if o.state.value in _FINAL:
            woke = settle(conn, [(job_id, o.state.value, dependents, batch_id)], o.at) or woke
    return woke


def _count(conn: sqlite3.Connection, job_id: int, kind: str, batch_id: str, now: float) -> bool:
    """Count one member's end; store the callback when it completes the batch."""
    row = conn.execute(W["count_member"], {"batch_id": batch_id, "kind": kind}).fetchone()
    if row is None:  # not a running batch (the callback job of a done one, or gone)
        return False
    conn.execute(W["member_counted"], {"id": job_id})
    if row[0] != "done":
        return False
    return _store_callback(conn, batch_id, row, now)


def _store_callback(
    conn: sqlite3.Connection, batch_id: str, row: Sequence[Any], now: float
) -> bool:
    """Store a done batch's callback job (row: state, total, completed, failed,
    cancelled, callback) with the counts merged into its options."""
    if row[5] is None:
        return False
    job = _load_job(row[5])
    options = json.loads(job.options) if job.options else {}
    options["batch"] = {
        "id": batch_id,
        "total": row[1],
        "completed": row[2],
        "failed": row[3],
        "cancelled": row[4],
    }
    job.options = json.dumps(options)
    job.run_at = max(job.run_at, now)
    state = JobState.SCHEDULED.value if job.run_at > now else JobState.QUEUED.value
    job_id = _insert(conn, job, now, state, batch_id=batch_id)
    if job_id is None:
        job_id = _existing(conn, job)[0]
    conn.execute(W["set_callback"], {"id": batch_id, "job_id": job_id})
    return True


_JOB_FIELDS = (
    "name",
    "payload",
    "state",
    "run_at",
    "priority",
    "channel",
    "max_attempts",
    "options",
    "remove_on_complete",
    "idempotency_key",
    "tags",
    "group",
    "tenant",
    "max_stalls",
    "remove_on_fail",
)


def _dump_job(job: NewJob) -> str:
    """A callback job as stored with its batch (JSON)."""
    fields = {f: getattr(job, f) for f in _JOB_FIELDS}
    fields["state"] = job.state.value
    fields["tags"] = list(job.tags)
    return json.dumps(fields)


def _load_job(text: str) -> NewJob:
    fields = json.loads(text)
    fields["state"] = JobState(fields["state"])
    fields["tags"] = tuple(fields["tags"])
    return NewJob(**fields)


class Workflows(SQLiteConnection):
    """``dependency_results`` and ``get_batch`` (the rest rides on enqueue and the
    transitions, see :func:`enqueue_workflow` and :func:`settle`)."""

    async def dependency_results(self, job_id: int) -> dict[int, str | None]:
        rows = await self._run(
            lambda c: c.execute(W["dependency_results"], {"job_id": job_id}).fetchall(),
            write=False,
        )
        return {int(r[0]): r[1] for r in rows}

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        row = await self._run(
            lambda c: c.execute(W["get_batch"], {"id": batch_id}).fetchone(), write=False
        )
        if row is None:
            return None
        return BatchRecord(
            id=row[0],
            total=int(row[1]),
            completed=int(row[2]),
            failed=int(row[3]),
            cancelled=int(row[4]),
            state=row[5],
            created_at=float(row[6]),
            callback_job_id=None if row[7] is None else int(row[7]),
        )

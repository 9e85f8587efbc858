"""Workflows on PostgreSQL: dependencies, batches and uniqueness windows (the contract is
the "Workflows" block of :mod:`conveyor.backends.records`).

Storage and the way every end of a job resolves its dependents and counts its batch
(two row triggers on ``jobs`` calling ``settle()``, in the ending transaction) are told
at the head of migration ``0006_workflows.sql``. This module holds the enqueue side, as
a sans-I/O plan (:func:`workflow_plan`, driven like ``enqueue.py``'s, in one
transaction) and the read verbs; the SQL is in ``workflows.sql``.

An enqueue with workflow fields goes: lock the stored dependencies (unknown ids refuse
it before anything is written), release the keys whose uniqueness window is over, insert
the jobs through the ordinary plan, store the batch, then one statement with the edges,
the dependents' states and batch membership. Jobs without workflow fields never come
here.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Generator, Sequence
from typing import Any

from conveyor.backends.base import EnqueueResult, NewJob
from conveyor.backends.postgres.sqlfiles import Queries
from conveyor.backends.records import BatchRecord, NewBatch
from conveyor.errors import ValidationError
from conveyor.models import JobState

__all__ = ["WorkflowVerbs", "is_workflow", "workflow_plan"]

Rows = list[tuple[Any, ...]]
Step = tuple[str, dict[str, Any]]
InsertPlan = Callable[[], Generator[Step, Rows, list[EnqueueResult]]]

_FINAL_BAD = frozenset({JobState.FAILED.value, JobState.CANCELLED.value})
_COMPLETED = JobState.COMPLETED.value


def is_workflow(jobs: Sequence[NewJob]) -> bool:
    """Whether an enqueue needs :func:`workflow_plan` (and so a transaction)."""
    return any(
        job.depends_on
        or job.batch_id is not None
        or (
            job.idempotency_key is not None
            and (job.unique_for is not None or job.unique_states is not None)
        )
        for job in jobs
    )


def _check_refs(jobs: Sequence[NewJob]) -> list[int]:
    """The stored dependency ids, after checking that each ``-k`` names an earlier job."""
    stored: set[int] = set()
    for i, job in enumerate(jobs):
        for ref in job.depends_on:
            if ref >= 1:
                stored.add(int(ref))
            elif not 1 <= -ref <= i:
                raise ValidationError(
                    f"depends_on: {ref} does not name an earlier job of the same call"
                )
    return sorted(stored)


def _callback_json(job: NewJob) -> str:
    return json.dumps(
        {
            "name": job.name,
            "payload": job.payload,
            "state": job.state.value,
            "run_at": float(job.run_at),
            "priority": job.priority,
            "channel": job.channel,
            "max_attempts": job.max_attempts,
            "max_stalls": job.max_stalls,
            "options": job.options,
            "remove_on_complete": job.remove_on_complete,
            "remove_on_fail": job.remove_on_fail,
            "idempotency_key": job.idempotency_key,
            "tags": list(job.tags),
            "group_key": job.group,
            "tenant": job.tenant,
        }
    )


def workflow_plan(
    queries: Queries,
    notify_channel: str,
    jobs: Sequence[NewJob],
    now: float,
    batch: NewBatch | None,
    insert: InsertPlan,
) -> Generator[Step, Rows, list[EnqueueResult]]:
    """Store ``jobs`` with their workflow fields (``insert``: the ordinary insert plan of
    the same jobs); one result per input, in input order."""
    stored = _check_refs(jobs)
    states: dict[int, str] = {}
    if stored:
        rows = yield (queries["workflow_lock"], {"ids": stored})
        states = {int(job_id): state for job_id, state in rows}
        unknown = [job_id for job_id in stored if job_id not in states]
        if unknown:
            raise ValidationError(f"unknown dependency ids {unknown}")
    windows = [
        {
            "tenant": job.tenant or "",
            "key": job.idempotency_key,
            "before": None if job.unique_for is None else now - job.unique_for,
            "states": None if job.unique_states is None else list(job.unique_states),
        }
        for job in jobs
        if job.idempotency_key is not None
        and (job.unique_for is not None or job.unique_states is not None)
    ]
    if windows:
        yield (queries["workflow_release_keys"], {"keys": json.dumps(windows)})
    results = yield from insert()

    # which input created which job (a repeated key shares the first one's job)
    created: dict[int, int] = {}  # job id -> input index, for the jobs stored anew
    for i, result in enumerate(results):
        if result.created and result.id not in created:
            created[result.id] = i
    # in-call dependencies that matched a stored job (idempotency): lock them too
    existing = sorted(
        {
            results[-ref - 1].id
            for i in created.values()
            for ref in jobs[i].depends_on
            if ref < 0 and results[-ref - 1].id not in created
        }
        - states.keys()
    )
    if existing:
        rows = yield (queries["workflow_lock"], {"ids": existing})
        states.update({int(job_id): state for job_id, state in rows})

    decided: dict[int, str] = {}  # job id -> state, for the jobs stored anew
    updates: dict[int, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []
    dependents: set[int] = set()
    for job_id, i in sorted(created.items(), key=lambda item: item[1]):
        job = jobs[i]
        row: dict[str, Any] = {
            "id": job_id,
            "state": None,
            "deps_left": None,
            "bad": None,
            "dependent": False,
            "dependencies": False,
            "batch_id": job.batch_id,
        }
        decided[job_id] = job.state.value
        deps = list(
            dict.fromkeys(ref if ref >= 1 else results[-ref - 1].id for ref in job.depends_on)
        )
        deps = [dep for dep in deps if dep != job_id]
        run = job.on_dependency_failure == "run"
        left = 0
        bad = None
        for dep in deps:
            state = decided.get(dep) or states.get(dep, "")
            finished = state == _COMPLETED or state in _FINAL_BAD
            if state in _FINAL_BAD and not run and bad is None:
                bad = dep
            if not finished:
                left += 1
            edges.append({"job_id": job_id, "dependency_id": dep, "run": run, "resolved": finished})
            dependents.add(dep)
        if deps:
            row["dependencies"] = True
            if bad is not None:
                row["state"], row["bad"] = JobState.CANCELLED.value, bad
            elif left:
                row["state"], row["deps_left"] = JobState.WAITING.value, left
            if row["state"] is not None:
                decided[job_id] = row["state"]
        if deps or job.batch_id is not None:
            updates[job_id] = row
    for dep in dependents & updates.keys():
        updates[dep]["dependent"] = True
    for dep in dependents & created.keys() - updates.keys():
        updates[dep] = {
            "id": dep,
            "state": None,
            "deps_left": None,
            "bad": None,
            "dependent": True,
            "dependencies": False,
            "batch_id": jobs[created[dep]].batch_id,
        }

    if batch is not None:
        members = sum(1 for job_id, i in created.items() if jobs[i].batch_id == batch.id)
        callback = None if batch.callback is None else _callback_json(batch.callback)
        yield (
            queries["workflow_batch"],
            {"id": batch.id, "total": members, "now": now, "callback": callback},
        )
        if members == 0:
            yield (
                queries["workflow_batch_empty"],
                {"id": batch.id, "now": now, "notify_channel": notify_channel},
            )
    if updates or edges:
        yield (
            queries["workflow_apply"],
            {
                "jobs": json.dumps(list(updates.values())),
                "edges": json.dumps(edges),
                "marked": sorted(dependents - created.keys()),
                "now": now,
            },
        )
    return results


class WorkflowVerbs:
    """The workflow verbs of :class:`~.backend.PostgresBackend` (a mixin: it uses the
    backend's pool and queries)."""

    queries: Queries
    _fetch: Callable[[str, str, dict[str, Any]], Awaitable[list[Any]]]

    async def dependency_results(self, job_id: int) -> dict[int, str | None]:
        rows = await self._fetch(
            "dependency_results", self.queries["dependency_results"], {"id": job_id}
        )
        return {int(dep): result for dep, result in rows}

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        rows = await self._fetch("get_batch", self.queries["get_batch"], {"id": batch_id})
        if not rows:
            return None
        r = rows[0]
        return BatchRecord(
            id=r[0],
            total=int(r[1]),
            completed=int(r[2]),
            failed=int(r[3]),
            cancelled=int(r[4]),
            state=r[5],
            created_at=r[6],
            callback_job_id=None if r[7] is None else int(r[7]),
        )

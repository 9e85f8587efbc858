"""Workflows on Redis: dependencies between jobs, batches with a completion callback, and
uniqueness windows (the contract is the "Workflows" block of
:mod:`conveyor.backends.records`).

:class:`WorkflowVerbs` holds the verbs (mixed into
:class:`~conveyor.backends.redis.backend.RedisBackend`). Storage and the exactly-once
argument are in ``scripts/_lib_workflow.lua``; in short:

* an enqueue that uses any workflow option runs ``enqueue_workflow.lua`` instead of
  ``enqueue.lua`` (so a plain enqueue, hand-off included, is unchanged): it checks every
  dependency before the first write (an unknown id refuses the whole call with
  :class:`~conveyor.errors.ValidationError`), stores the batch row with its members, the
  edges (``P deps:<id>`` and ``P dnts:<dependency>``), and applies uniqueness windows;
* every transition into a final state (``complete.lua``, ``complete_claim.lua``,
  ``cancel.lua``, ``cancel_jobs.lua``, ``delete_jobs.lua`` of an unfinished job) resolves
  the job's dependents and counts it in its batch in the same script, through
  ``workflow_finished``, only when the job's hash says it has dependents or a batch;
* ``purge`` (``_lib.lua``: prune, delete, ``remove_on_complete``) drops a job's edges
  with it, and the batch row with its callback job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from conveyor.backends.base import BatchRecord, EnqueueParams, EnqueueResult, NewJob
from conveyor.backends.redis import codec
from conveyor.backends.redis.connections import Connections
from conveyor.backends.redis.keys import Keys
from conveyor.errors import ValidationError

__all__ = ["WorkflowVerbs", "batch_from_hash", "uses_workflows", "workflow_args"]


class _Host(Protocol):
    """What the verbs use of the backend they are mixed into."""

    _keys: Keys

    def _require(self) -> Connections: ...
    async def _script(self, name: str, *args: str) -> Any: ...


def uses_workflows(params: EnqueueParams) -> bool:
    """Whether this enqueue needs ``enqueue_workflow.lua`` (a batch, a dependency, a
    batch member, or a uniqueness window)."""
    if params.batch is not None:
        return True
    for job in params.jobs:
        if job.depends_on or job.batch_id is not None:
            return True
        if job.idempotency_key and (job.unique_for is not None or job.unique_states is not None):
            return True
    return False


def _job_args(now: float, job: NewJob) -> list[str]:
    """One job of ``enqueue_workflow.lua``: its 15 values of ``enqueue.lua``, then its
    dependencies, on_dependency_failure, batch id, unique cutoff and unique states."""
    cutoff = "" if job.unique_for is None else codec.ts(now - float(job.unique_for))
    states = None if job.unique_states is None else [str(s) for s in job.unique_states]
    return [
        *codec.job_args(job),
        *codec.counted([str(int(d)) for d in job.depends_on]),
        "run" if job.on_dependency_failure == "run" else "cancel",
        codec.opt(job.batch_id),
        cutoff,
        *codec.counted(states),
    ]


def workflow_args(params: EnqueueParams) -> list[str]:
    """The arguments of ``enqueue_workflow.lua`` (from its ``ARGV[2]``)."""
    now, batch = params.now, params.batch
    args = [codec.ts(now)]
    if batch is None:
        args += ["", "0", ""]
    else:
        callback = batch.callback
        cb = "" if callback is None else json.dumps(codec.job_args(callback), ensure_ascii=False)
        args += [batch.id, str(int(batch.total)), cb]
    args.append(str(len(params.jobs)))
    for job in params.jobs:
        args += _job_args(now, job)
    return args


def batch_from_hash(batch_id: str, h: dict[str, str]) -> BatchRecord | None:
    """A batch row (``P batch:<id>``), or None when there is none."""
    if not h or "total" not in h:
        return None
    callback = h.get("callback_job_id") or None
    return BatchRecord(
        id=batch_id,
        total=int(h["total"]),
        completed=int(h.get("completed") or 0),
        failed=int(h.get("failed") or 0),
        cancelled=int(h.get("cancelled") or 0),
        state=h.get("state") or "running",
        created_at=float(h["created_at"]),
        callback_job_id=None if callback is None else int(callback),
    )


class WorkflowVerbs:
    """The workflow verbs of the Redis backend (see the module docstring)."""

    async def _enqueue_workflow(self: _Host, params: EnqueueParams) -> list[EnqueueResult]:
        """``enqueue_many`` for an enqueue that :func:`uses_workflows`, in one script."""
        reply: Sequence[Any] = await self._script("enqueue_workflow", *workflow_args(params))
        status = reply[0]
        if status == "unknown":
            ids = sorted({int(x) for x in reply[1:]})
            raise ValidationError(f"unknown dependency ids {ids}")
        if status == "batch_exists":
            batch = params.batch
            raise ValidationError(f"batch {batch.id if batch else ''!r} exists already")
        return [
            EnqueueResult(id=int(reply[i]), created=reply[i + 1] == 1)
            for i in range(1, len(reply), 2)
        ]

    async def dependency_results(self: _Host, job_id: int) -> dict[int, str | None]:
        """The results (JSON text; None when the dependency is gone or has none) of the
        jobs ``job_id`` depends on, by id (one script: ``dependency_results.lua``)."""
        flat = await self._script("dependency_results", str(int(job_id)))
        return {int(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}

    async def get_batch(self: _Host, batch_id: str) -> BatchRecord | None:
        """The batch row, or None (never stored, or deleted with its callback job)."""
        conns = self._require()
        h = await conns.guard("get_batch", conns.client.hgetall(self._keys.batch(batch_id)))
        return batch_from_hash(batch_id, {str(k): str(v) for k, v in h.items()})

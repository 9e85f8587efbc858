"""The operations surface on PostgreSQL: the worker registry, the pause state,
throughput and deleting jobs (DESIGN.md "The operations surface").

Their SQL is in ``ops.sql``, one statement per verb. Storage: the ``workers`` table
(migration 0004), one row per live worker, replaced by each heartbeat; the pause state
is the ``paused_channels`` rows ``set_paused`` writes; throughput reads the finished
jobs through ``jobs_prune_idx`` (state, finished_at); ``delete_jobs`` deletes as
``prune`` does, by id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from conveyor.backends.base import RemovedJob
from conveyor.backends.postgres.sqlfiles import Queries
from conveyor.backends.records import (
    PausedState,
    ThroughputBucket,
    ThroughputParams,
    WorkerRecord,
)

__all__ = ["OpsVerbs"]

_EVERYTHING = ""  # the paused_channels row that pauses every channel (see set_paused)


class OpsVerbs:
    """The operations-surface verbs of :class:`~.backend.PostgresBackend` (a mixin: it
    uses the backend's pool and queries)."""

    queries: Queries
    _fetch: Callable[[str, str, dict[str, Any]], Awaitable[list[Any]]]

    # -- the worker registry ------------------------------------------------------------
    async def register_worker(self, record: WorkerRecord) -> None:
        await self._fetch(
            "register_worker",
            self.queries["register_worker"],
            {
                "id": record.id,
                "host": record.host,
                "pid": record.pid,
                "channels": None if record.channels is None else list(record.channels),
                "concurrency": record.concurrency,
                "running": list(record.running),
                "started_at": record.started_at,
                "last_seen": record.last_seen,
                "expires_at": record.expires_at,
            },
        )

    async def remove_worker(self, worker_id: str) -> None:
        await self._fetch("remove_worker", self.queries["remove_worker"], {"id": worker_id})

    async def list_workers(self, now: float) -> list[WorkerRecord]:
        rows = await self._fetch("list_workers", self.queries["list_workers"], {"now": now})
        return [
            WorkerRecord(
                id=r[0],
                host=r[1],
                pid=int(r[2]),
                channels=None if r[3] is None else tuple(r[3]),
                concurrency=int(r[4]),
                running=tuple(int(job_id) for job_id in r[5]),
                started_at=r[6],
                last_seen=r[7],
                expires_at=r[8],
            )
            for r in rows
        ]

    # -- pause state and throughput -----------------------------------------------------
    async def paused_state(self) -> PausedState:
        rows = await self._fetch("paused_state", self.queries["paused_state"], {})
        channels = {row[0] for row in rows}
        everything = _EVERYTHING in channels
        channels.discard(_EVERYTHING)
        return PausedState(everything=everything, channels=frozenset(channels))

    async def throughput(self, params: ThroughputParams) -> list[ThroughputBucket]:
        if params.buckets <= 0 or params.bucket <= 0:
            return []
        rows = await self._fetch(
            "throughput",
            self.queries["throughput"],
            {"since": params.since, "bucket": params.bucket, "buckets": params.buckets},
        )
        return [
            ThroughputBucket(int(index), int(completed), int(failed), int(cancelled))
            for index, completed, failed, cancelled in rows
            if 0 <= index < params.buckets
        ]

    # -- delete -------------------------------------------------------------------------
    async def delete_jobs(self, job_ids: Sequence[int], now: float) -> list[RemovedJob]:
        """One statement (``ops.sql``): the jobs that are not running, with their
        events, logs, steps and tokens. ``now`` is when an unfinished one ends for its
        dependents and its batch (workflows)."""
        if not job_ids:
            return []
        rows = await self._fetch(
            "delete_jobs",
            self.queries["delete_jobs"],
            {"ids": sorted(set(job_ids)), "now": now},
        )
        return [RemovedJob(int(r[0]), r[1], r[2], int(r[3])) for r in rows]

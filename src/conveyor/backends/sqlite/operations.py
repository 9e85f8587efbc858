"""The operations surface on SQLite: the worker registry, the pause state, throughput and
deleting jobs.

- **Workers** are rows of ``conveyor_workers``, upserted at every heartbeat; a row whose
  ``expires_at`` has passed is not listed, and the next registration (already a write)
  deletes it, so listing stays a plain read and the table holds live workers only.
- **Pause state** reads ``conveyor_paused`` (the row ``''`` pauses every channel, see
  ``manage.py``).
- **Throughput** is one statement: a range seek of the partial finished index
  ``(state, finished_at)`` per bucket and final state, counted in SQL.
- **delete_jobs** is one transaction: a ``DELETE … RETURNING`` of the jobs that are not
  running, then their events and logs as ``prune`` deletes them (steps and tokens go
  with the rows, by the trigger of ``schema.sql``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from conveyor.backends.base import (
    PausedState,
    RemovedJob,
    ThroughputBucket,
    ThroughputParams,
    WorkerRecord,
)
from conveyor.backends.sqlite.connection import Q, SQLiteConnection
from conveyor.backends.sqlite.maintenance import delete_children
from conveyor.backends.sqlite.workflows import settle

__all__ = ["Operations"]

_EVERY_CHANNEL = ""  # the conveyor_paused row that pauses every channel (manage.py)
_FINAL = ("completed", "failed", "cancelled")


def _worker_args(record: WorkerRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "host": record.host,
        "pid": record.pid,
        "channels": json.dumps(list(record.channels)) if record.channels is not None else None,
        "concurrency": record.concurrency,
        "running": json.dumps(list(record.running)),
        "started_at": record.started_at,
        "last_seen": record.last_seen,
        "expires_at": record.expires_at,
    }


def _worker(row: sqlite3.Row) -> WorkerRecord:
    channels = row["channels"]
    return WorkerRecord(
        id=row["id"],
        host=row["host"],
        pid=int(row["pid"]),
        channels=tuple(json.loads(channels)) if channels is not None else None,
        concurrency=int(row["concurrency"]),
        running=tuple(int(i) for i in json.loads(row["running"])),
        started_at=float(row["started_at"]),
        last_seen=float(row["last_seen"]),
        expires_at=float(row["expires_at"]),
    )


def _register(conn: sqlite3.Connection, record: WorkerRecord) -> None:
    # The heartbeat's time is "now" for the others: a row expired by then is a dead
    # worker's (every process of one SQLite file shares the host's clock).
    conn.execute(Q["forget_expired_workers"], {"now": record.last_seen})
    conn.execute(Q["register_worker"], _worker_args(record))


def _buckets(rows: list[sqlite3.Row]) -> list[ThroughputBucket]:
    counts: dict[int, dict[str, int]] = {}
    for row in rows:
        if row["state"] in _FINAL:
            counts.setdefault(int(row["idx"]), {})[row["state"]] = int(row["n"])
    return [ThroughputBucket(index, **by_state) for index, by_state in sorted(counts.items())]


def _delete(conn: sqlite3.Connection, job_ids: list[int], now: float) -> list[RemovedJob]:
    rows = conn.execute(Q["delete_not_running"], {"ids": json.dumps(job_ids)}).fetchall()
    removed = [RemovedJob(r[0], r[1], r[2], r[3]) for r in rows]
    if removed:
        delete_children(conn, {"ids": json.dumps([r.id for r in removed])})
        # Workflows: an unfinished job deleted counts as cancelled for its dependents and
        # its batch (workflows.py); a finished one settled them when it finished.
        unfinished = [(r[0], "deleted", r[5], r[6]) for r in rows if r[4] not in _FINAL]
        if unfinished:
            settle(conn, unfinished, now)
    return removed


class Operations(SQLiteConnection):
    """What the dashboard, the CLI and the MCP server read and do beyond jobs."""

    async def register_worker(self, record: WorkerRecord) -> None:
        await self._run(lambda c: _register(c, record))

    async def remove_worker(self, worker_id: str) -> None:
        await self._run(lambda c: c.execute(Q["remove_worker"], {"id": worker_id}))

    async def list_workers(self, now: float) -> list[WorkerRecord]:
        rows = await self._run(
            lambda c: c.execute(Q["list_workers"], {"now": now}).fetchall(), write=False
        )
        return [_worker(r) for r in rows]

    async def paused_state(self) -> PausedState:
        rows = await self._run(lambda c: c.execute(Q["paused_channels"]).fetchall(), write=False)
        channels = {r[0] for r in rows}
        everything = _EVERY_CHANNEL in channels
        channels.discard(_EVERY_CHANNEL)
        return PausedState(everything=everything, channels=frozenset(channels))

    async def throughput(self, params: ThroughputParams) -> list[ThroughputBucket]:
        if params.buckets <= 0 or params.bucket <= 0:
            return []
        args = {"since": params.since, "bucket": params.bucket, "buckets": params.buckets}
        rows = await self._run(lambda c: c.execute(Q["throughput"], args).fetchall(), write=False)
        return _buckets(rows)

    async def delete_jobs(self, job_ids: Sequence[int], now: float) -> list[RemovedJob]:
        ids = [int(i) for i in job_ids]
        if not ids:
            return []
        removed = await self._run(lambda c: _delete(c, ids, now))
        if removed:
            self.wake()  # a dependent that runs anyway, a batch callback (workflows)
        return removed

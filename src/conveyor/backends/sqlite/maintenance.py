"""Maintenance on SQLite: expired leases, promoting due jobs, retention, named locks.

The core's maintenance service decides; these apply: ``expired_leases`` only reads (each
rescue is a fenced outcome through ``complete_many``), ``promote_due`` flips scheduled
jobs to queued, ``prune`` deletes finished jobs with their events and logs (the removal
``delete_jobs`` shares: ``delete_children``), and ``acquire_lock`` is a lease row taken
or renewed in one upsert.
"""

from __future__ import annotations

import json
import sqlite3

from conveyor.backends.base import (
    ExpiredLease,
    LockParams,
    PromoteParams,
    PromoteResult,
    PruneParams,
    PruneResult,
    RemovedJob,
)
from conveyor.backends.sqlite.connection import Q, SQLiteConnection

__all__ = ["Maintenance", "delete_children"]


def delete_children(conn: sqlite3.Connection, args: dict[str, str]) -> None:
    """Delete the events and logs of the deleted jobs ``args["ids"]`` (a JSON array), in
    the caller's transaction; their steps and tokens went with their rows (a trigger,
    ``schema.sql``). How every removal of a job ends (``prune``, ``delete_jobs``)."""
    conn.execute(Q["delete_events_of"], args)
    conn.execute(Q["delete_logs_of"], args)


class Maintenance(SQLiteConnection):
    """The calls of the core's maintenance service."""

    async def expired_leases(self, now: float, limit: int) -> list[ExpiredLease]:
        rows = await self._run(
            lambda c: c.execute(Q["expired_leases"], {"now": now, "limit": limit}).fetchall(),
            write=False,
        )
        return [
            ExpiredLease(
                id=r["id"],
                token=r["lease_token"],
                name=r["name"],
                tenant=r["tenant"],
                attempts=r["attempts"],
                max_attempts=r["max_attempts"],
                options=r["options"],
                cancel_requested=bool(r["cancel_requested"]),
                stalls=r["stalls"],
                max_stalls=r["max_stalls"],
            )
            for r in rows
        ]

    async def promote_due(self, params: PromoteParams) -> PromoteResult:
        args = {"until": params.now + params.horizon, "limit": params.limit}
        rows = await self._run(lambda c: c.execute(Q["promote_due"], args).fetchall())
        if rows:
            self.wake()
        future = [r[0] for r in rows if r[0] > params.now]
        return PromoteResult(len(rows), min(future) if future else None)

    async def prune(self, params: PruneParams) -> PruneResult:
        def tx(conn: sqlite3.Connection) -> PruneResult:
            removed = [
                RemovedJob(r[0], r[1], r[2], r[3])
                for r in conn.execute(
                    Q["prune_ids"],
                    {
                        "state": params.state.value,
                        "before": params.finished_before,
                        "limit": params.limit,
                    },
                )
            ]
            if removed:
                args = {"ids": json.dumps([r.id for r in removed])}
                conn.execute(Q["delete_jobs"], args)
                delete_children(conn, args)
            # Events outlive jobs deleted without them (remove_on_complete): as old, go.
            orphans = {"before": params.finished_before, "limit": params.limit}
            conn.execute(Q["prune_orphan_events"], orphans)
            return PruneResult(removed)

        return await self._run(tx)

    async def acquire_lock(self, params: LockParams) -> bool:
        args = {
            "name": params.name,
            "owner": params.owner,
            "expires_at": params.now + params.ttl,
            "now": params.now,
        }
        row = await self._run(lambda c: c.execute(Q["acquire_lock"], args).fetchone())
        return row is not None

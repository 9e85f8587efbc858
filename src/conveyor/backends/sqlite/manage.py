"""Inspection and management on SQLite: jobs, counts, cancel, retry, pause, logs.

Reads autocommit (WAL readers never wait for the writer); changes are one
``BEGIN IMMEDIATE`` transaction each. Pauses are rows of ``conveyor_paused``; the row
``''`` (never a channel name: names are non-empty) is the every-channel pause, so a
channel named ``"*"`` is just a channel.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from typing import Any

from conveyor.backends.base import (
    CancelOutcome,
    ChannelStats,
    JobFilter,
    RetryOutcome,
    RetryResult,
)
from conveyor.backends.rows import job_from_row, log_from_row
from conveyor.backends.sqlite.connection import Q, SQLiteConnection
from conveyor.backends.sqlite.events import store_event
from conveyor.backends.sqlite.workflows import settle
from conveyor.models import Job, JobState, LogRecord

__all__ = ["Management"]

_EVERY_CHANNEL = ""  # the conveyor_paused row that pauses every channel


def _filter_args(flt: JobFilter, upcoming: bool = False) -> dict[str, Any]:
    return {
        "state": flt.state.value if flt.state is not None else None,
        "name": flt.name,
        "name_prefix": flt.name_prefix,
        "channel": flt.channel,
        "tenant": flt.tenant,
        "before_id": flt.before_id,
        "tags": json.dumps(list(flt.tags)) if flt.tags is not None else None,
        "tag_mode": flt.tag_mode,
        "limit": flt.limit,
        "upcoming": int(upcoming),
    }


def _job(row: sqlite3.Row) -> Job:
    """The job of a ``conveyor_jobs`` row, ``wait_token`` included."""
    fields = dict(row)
    job = job_from_row(fields)
    wait_token = fields.get("wait_token")
    if wait_token is not None and job.wait_token != wait_token:
        job = replace(job, wait_token=wait_token)
    return job


def _cancel_one(conn: sqlite3.Connection, job_id: int, now: float) -> CancelOutcome:
    row = conn.execute(Q["cancel_upcoming"], {"job_id": job_id, "now": now}).fetchone()
    if row is not None:
        store_event(conn, job_id, "cancelled", row, row[2], now)
        settle(conn, [(job_id, "cancelled", row[3], row[4])], now)  # workflows
        return CancelOutcome.CANCELLED
    if conn.execute(Q["cancel_running"], {"job_id": job_id}).fetchone() is not None:
        return CancelOutcome.REQUESTED
    state = conn.execute(Q["job_state"], {"job_id": job_id}).fetchone()
    return CancelOutcome.MISSING if state is None else CancelOutcome.FINISHED


class Management(SQLiteConnection):
    """Reading jobs and changing them from outside a worker."""

    async def get_job(self, job_id: int, tenant: str | None = None) -> Job | None:
        args = {"job_id": job_id, "tenant": tenant}
        row = await self._run(lambda c: c.execute(Q["get_job"], args).fetchone(), write=False)
        return None if row is None else _job(row)

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        rows = await self._run(
            lambda c: c.execute(Q["list_jobs"], _filter_args(flt)).fetchall(), write=False
        )
        return [_job(r) for r in rows]

    async def counts(self, channel: str | None) -> dict[str, int]:
        rows = await self._run(
            lambda c: c.execute(Q["counts"], {"channel": channel}).fetchall(), write=False
        )
        out = {s.value: 0 for s in JobState}
        out.update({r[0]: r[1] for r in rows})
        return out

    async def channel_stats(self) -> list[ChannelStats]:
        rows = await self._run(lambda c: c.execute(Q["channel_stats"]).fetchall(), write=False)
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float] = {}
        for r in rows:
            counts.setdefault(r["channel"], {})[r["state"]] = r["n"]
            if r["oldest"] is not None:
                oldest[r["channel"]] = r["oldest"]
        return [ChannelStats(ch, c, oldest.get(ch)) for ch, c in sorted(counts.items())]

    async def cancel(self, job_id: int, now: float) -> CancelOutcome:
        outcome = await self._run(lambda c: _cancel_one(c, job_id, now))
        if outcome is CancelOutcome.CANCELLED:
            self.wake()  # its dependents may run anyway, or its batch's callback was stored
        return outcome

    async def cancel_jobs(self, flt: JobFilter, now: float) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            args = _filter_args(flt, upcoming=True)
            args["limit"] = -1
            ids = [r["id"] for r in conn.execute(Q["list_jobs"], args)]
            return sum(_cancel_one(conn, i, now) is CancelOutcome.CANCELLED for i in ids)

        cancelled = await self._run(tx)
        if cancelled:
            self.wake()  # dependents that run anyway, batch callbacks (workflows)
        return cancelled

    async def retry(self, job_id: int, now: float) -> RetryResult:
        def tx(conn: sqlite3.Connection) -> RetryResult:
            row = conn.execute(Q["retry"], {"job_id": job_id, "now": now}).fetchone()
            if row is not None:
                store_event(conn, job_id, "enqueued", row, 0, now, {"retry": True})
                return RetryResult(RetryOutcome.RETRIED)
            state = conn.execute(Q["job_state"], {"job_id": job_id}).fetchone()
            if state is None:
                return RetryResult(RetryOutcome.MISSING)
            return RetryResult(RetryOutcome.NOT_RETRYABLE, JobState(state[0]))

        result = await self._run(tx)
        self.wake()
        return result

    async def set_paused(self, channel: str | None, paused: bool) -> None:
        """``None`` is every channel: pausing it adds the every-channel row (the claim
        skips every channel while it exists), resuming it deletes every row; resuming one
        channel deletes only its own row."""

        def tx(conn: sqlite3.Connection) -> None:
            if paused:
                target = channel if channel is not None else _EVERY_CHANNEL
                conn.execute(Q["pause"], {"channel": target})
            elif channel is None:
                conn.execute(Q["resume_all"])
            else:
                conn.execute(Q["resume"], {"channel": channel})

        await self._run(tx)
        if not paused:
            self.wake()

    async def get_logs(self, job_id: int) -> list[LogRecord]:
        rows = await self._run(
            lambda c: c.execute(Q["get_logs"], {"job_id": job_id}).fetchall(), write=False
        )
        return [log_from_row(dict(r)) for r in rows]

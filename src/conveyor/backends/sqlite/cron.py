"""Cron schedules on SQLite: rows of ``conveyor_cron``.

The core computes every tick; ``fire_cron`` applies one as a compare-and-swap on
``next_run_at`` and inserts the tick's job in the same transaction, so any number of
processes fire each tick once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from conveyor.backends.base import CronFire, CronFireResult, CronPause, CronRecord
from conveyor.backends.sqlite.connection import Q, SQLiteConnection
from conveyor.backends.sqlite.enqueue import insert_jobs

__all__ = ["Cron"]


def _cron_args(r: CronRecord) -> dict[str, Any]:
    return {
        "name": r.name,
        "expression": r.expression,
        "job": r.job,
        "payload": r.payload,
        "timezone": r.timezone,
        "paused": int(r.paused),
        "allow_overlap": int(r.allow_overlap),
        "catch_up": r.catch_up,
        "options": r.options,
        "next_run_at": r.next_run_at,
        "last_run_at": r.last_run_at,
        "last_job_id": r.last_job_id,
    }


class Cron(SQLiteConnection):
    """Storing, pausing and firing schedules."""

    async def upsert_cron(self, record: CronRecord) -> None:
        await self._run(lambda c: c.execute(Q["upsert_cron"], _cron_args(record)))

    async def list_cron(self) -> list[CronRecord]:
        rows = await self._run(lambda c: c.execute(Q["list_cron"]).fetchall(), write=False)
        return [
            CronRecord(
                name=r["name"],
                expression=r["expression"],
                job=r["job"],
                payload=r["payload"],
                timezone=r["timezone"],
                paused=bool(r["paused"]),
                allow_overlap=bool(r["allow_overlap"]),
                catch_up=r["catch_up"],
                options=r["options"],
                next_run_at=r["next_run_at"],
                last_run_at=r["last_run_at"],
                last_job_id=r["last_job_id"],
            )
            for r in rows
        ]

    async def delete_cron(self, names: Sequence[str]) -> int:
        cur = await self._run(
            lambda c: c.execute(Q["delete_cron"], {"names": json.dumps(list(names))})
        )
        return int(cur.rowcount)

    async def set_cron_paused(self, params: CronPause) -> bool:
        args = {
            "name": params.name,
            "paused": int(params.paused),
            "next_run_at": params.next_run_at,
        }
        cur = await self._run(lambda c: c.execute(Q["set_cron_paused"], args))
        return bool(cur.rowcount)

    async def fire_cron(self, fire: CronFire) -> CronFireResult:
        def tx(conn: sqlite3.Connection) -> CronFireResult:
            cur = conn.execute(
                Q["cron_cas"],
                {
                    "name": fire.name,
                    "new_next": fire.new_next,
                    "tick": fire.tick,
                    "expected_next": fire.expected_next,
                },
            )
            if cur.rowcount != 1:
                return CronFireResult(won=False, job_id=None)
            if fire.job is None:
                return CronFireResult(won=True, job_id=None)
            result = insert_jobs(conn, [fire.job], fire.now)[0]
            conn.execute(Q["cron_set_last_job"], {"name": fire.name, "job_id": result.id})
            return CronFireResult(won=True, job_id=result.id)

        fired = await self._run(tx)
        if fired.job_id is not None:
            self.wake()
        return fired

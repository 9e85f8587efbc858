"""Cron schedules on PostgreSQL: the ``cron`` table's verbs (a mixin of
:class:`~.backend.PostgresBackend`, using its pool and queries). ``fire_cron`` commits the
compare-and-swap on ``next_run_at`` and the tick's job together."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from conveyor.backends.base import (
    CronFire,
    CronFireResult,
    CronPause,
    CronRecord,
    EnqueueResult,
)
from conveyor.backends.postgres import codec
from conveyor.backends.postgres.connections import backend_errors
from conveyor.backends.postgres.enqueue import drive, enqueue_plan
from conveyor.backends.postgres.sqlfiles import Queries

__all__ = ["CronVerbs"]


class CronVerbs:
    """The cron verbs of the PostgreSQL backend."""

    queries: Queries
    notify_channel: str
    _fetch: Callable[[str, str, dict[str, Any]], Awaitable[list[Any]]]
    _connection: Callable[[], Any]
    _notified: Callable[..., None]

    async def upsert_cron(self, record: CronRecord) -> None:
        await self._fetch("upsert_cron", self.queries["upsert_cron"], codec.cron_args(record))

    async def list_cron(self) -> list[CronRecord]:
        rows = await self._fetch("list_cron", self.queries["list_cron"], {})
        return [codec.cron_record(row) for row in rows]

    async def delete_cron(self, names: Sequence[str]) -> int:
        if not names:
            return 0
        with backend_errors("delete_cron"):
            async with self._connection() as conn:
                cur = await conn.execute(self.queries["delete_cron"], {"names": list(names)})
                return int(cur.rowcount)

    async def set_cron_paused(self, params: CronPause) -> bool:
        with backend_errors("set_cron_paused"):
            async with self._connection() as conn:
                cur = await conn.execute(
                    self.queries["set_cron_paused"],
                    {
                        "name": params.name,
                        "paused": params.paused,
                        "next_run_at": params.next_run_at,
                    },
                )
                return bool(cur.rowcount == 1)

    async def fire_cron(self, fire: CronFire) -> CronFireResult:
        """The compare-and-swap on ``next_run_at`` and the job's insert commit together."""
        args = {
            "name": fire.name,
            "expected": fire.expected_next,
            "new_next": fire.new_next,
            "tick": fire.tick,
        }
        job_id: int | None = None
        with backend_errors("fire_cron"):
            async with self._connection() as conn, conn.transaction():
                cur = await conn.execute(self.queries["fire_cron"], args)
                if not await cur.fetchall():
                    return CronFireResult(won=False, job_id=None)
                if fire.job is not None:
                    plan = enqueue_plan(self.queries, self.notify_channel, [fire.job], fire.now)
                    results: list[EnqueueResult] = await drive(conn, plan)
                    job_id = results[0].id
                    await conn.execute(
                        self.queries["cron_set_job"], {"name": fire.name, "job_id": job_id}
                    )
        if job_id is not None:
            self._notified()
        return CronFireResult(won=True, job_id=job_id)

"""Durable execution on PostgreSQL: the verbs of steps, tokens and resumption.

Their SQL is in ``durable.sql``. A suspend is not a verb of its own: it is an outcome to
``waiting`` applied by ``complete_many`` / ``complete_and_claim``, whose batch then goes
through the ``complete_wait_*`` statements (``sqlfiles.Queries``); a batch without a
wait runs the plain statements, exactly as before durable execution existed.

Storage (migration 0003): ``job_steps`` (one row per step, unique per job and name, in
the order stored), ``job_tokens`` (id, job, state, data, tags, times) and the job's
``wait_token``; waiting jobs sit only in ``jobs_waiting_idx`` (run_at of waiting rows),
never in a claim index. How a completion never races a suspend is told at the head of
``durable.sql``: both lock the token row before they touch the job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from conveyor.backends.postgres.connections import backend_errors
from conveyor.backends.postgres.listener import Signal
from conveyor.backends.postgres.sqlfiles import Queries, native
from conveyor.backends.records import (
    ResumedJob,
    ResumeParams,
    StepRecord,
    StepSave,
    TokenCompletion,
    TokenCompletionResult,
    TokenRecord,
)

__all__ = ["DurableVerbs"]


class DurableVerbs:
    """The durable-execution verbs of :class:`~.backend.PostgresBackend` (a mixin: it
    uses the backend's pool, queries and wake-up signals)."""

    queries: Queries
    notify_channel: str
    _work: Signal
    _events: Signal
    _connection: Callable[[], Any]
    _fetch: Callable[[str, str, dict[str, Any]], Awaitable[list[Any]]]

    async def save_step(self, save: StepSave) -> bool:
        token = save.new_token
        rows = await self._fetch(
            "save_step",
            self.queries["save_step"],
            {
                "job_id": save.job_id,
                "token": save.token,
                "name": save.name,
                "result": save.result,
                "at": save.at,
                "token_id": None if token is None else token.id,
                "expires_at": None if token is None else token.expires_at,
                "tags": [] if token is None else list(token.tags),
            },
        )
        return bool(rows[0][0])

    async def load_steps(self, job_id: int) -> list[StepRecord]:
        rows = await self._fetch("load_steps", self.queries["load_steps"], {"job_id": job_id})
        return [StepRecord(name, result, at) for name, result, at in rows]

    async def complete_token(self, completion: TokenCompletion) -> TokenCompletionResult:
        """Two statements in one transaction: the token's update (which waits for a
        suspend holding its row), then the job's resume, whose fresh snapshot sees what
        that suspend committed (``durable.sql``). Both, with the transaction's begin and
        commit, go out in one pipeline: one round trip."""
        args = {
            "id": completion.id,
            "data": completion.data,
            "now": completion.now,
            "notify_channel": self.notify_channel,
        }
        with backend_errors("complete_token"):
            async with self._connection() as conn:
                async with conn.pipeline(), conn.transaction():
                    first = await _queue(conn, self.queries["token_complete"], args)
                    second = await _queue(conn, self.queries["token_resume"], args)
                async with first, second:
                    rows, resumed = await first.fetchall(), await second.fetchall()
        if not rows:
            return TokenCompletionResult(completed=False)
        job_id = int(rows[0][0])
        if not resumed:
            return TokenCompletionResult(completed=True, job_id=job_id)
        self._work.fire()
        self._events.fire()
        name, tenant, attempts = resumed[0]
        return TokenCompletionResult(True, job_id, True, name, tenant, int(attempts))

    async def get_token(self, token_id: str) -> TokenRecord | None:
        rows = await self._fetch("get_token", self.queries["get_token"], {"id": token_id})
        return _token(rows[0]) if rows else None

    async def list_tokens(self, job_id: int) -> list[TokenRecord]:
        rows = await self._fetch("list_tokens", self.queries["list_tokens"], {"job_id": job_id})
        return [_token(row) for row in rows]

    async def resume_due(self, params: ResumeParams) -> list[ResumedJob]:
        if params.limit <= 0:
            return []
        rows = await self._fetch(
            "resume_due",
            self.queries["resume_due"],
            {"now": params.now, "limit": params.limit, "notify_channel": self.notify_channel},
        )
        if rows:
            self._work.fire()
            self._events.fire()
        return [ResumedJob(int(r[0]), r[1], r[2], int(r[3]), r[4]) for r in rows]


async def _execute(
    conn: psycopg.AsyncConnection[Any], query: str, args: dict[str, Any]
) -> list[tuple[Any, ...]]:
    """One statement on ``conn`` (native ``$n`` placeholders, as ``_fetch``); its rows."""
    sql, names = native(query)
    async with psycopg.AsyncRawCursor(conn, row_factory=tuple_row) as cur:
        await cur.execute(sql, [args[name] for name in names])
        result = cur.pgresult
        return await cur.fetchall() if result is not None and result.nfields else []


async def _queue(
    conn: psycopg.AsyncConnection[Any], query: str, args: dict[str, Any]
) -> psycopg.AsyncRawCursor[tuple[Any, ...]]:
    """One statement sent on ``conn`` in pipeline mode; its cursor, to read the rows
    from once the pipeline has synced."""
    sql, names = native(query)
    cur = psycopg.AsyncRawCursor(conn, row_factory=tuple_row)
    await cur.execute(sql, [args[name] for name in names])
    return cur


def _token(row: Sequence[Any]) -> TokenRecord:
    """A row of ``get_token`` / ``list_tokens``."""
    return TokenRecord(
        id=row[0],
        job_id=int(row[1]),
        state=row[2],
        data=row[3],
        tags=tuple(row[4]),
        expires_at=row[5],
        created_at=row[6],
        completed_at=row[7],
    )

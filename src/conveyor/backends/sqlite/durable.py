"""Durable execution on SQLite: steps, tokens and resuming waiting jobs.

- **Steps** are rows of ``conveyor_steps`` (one per job and name, in insertion order);
  a save is fenced by the lease token and inserts nothing when the name is taken (the
  first result stands). A step's token (``ctx.create_token``) goes into
  ``conveyor_tokens`` in the same transaction, and only with a step newly stored.
- **Waits** are an Outcome to ``waiting`` (``hotpath.py``): the job leaves the claim
  index for the partial ``conveyor_jobs_waiting`` index on ``run_at``, which
  ``resume_due`` walks.
- **Race-freedom**: every change here is one ``BEGIN IMMEDIATE`` transaction, and SQLite
  runs one writer at a time across processes. ``complete_token`` and a suspend on the
  same token are therefore serialised: whichever commits second sees the other's work
  (a completed token diverts the suspend to ``queued``; a waiting job is resumed by the
  completion), and two ``resume_due`` calls never pick the same job.
- Steps and tokens go with their job when it is deleted (a trigger, ``schema.sql``).
"""

from __future__ import annotations

import json
import sqlite3

from conveyor.backends.base import (
    ResumedJob,
    ResumeParams,
    StepRecord,
    StepSave,
    TokenCompletion,
    TokenCompletionResult,
    TokenRecord,
)
from conveyor.backends.sqlite.connection import Q, SQLiteConnection
from conveyor.backends.sqlite.events import store_event

__all__ = ["Durable"]


def _token(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        job_id=row["job_id"],
        state=row["state"],
        data=row["data"],
        tags=tuple(json.loads(row["tags"])) if row["tags"] else (),
        expires_at=row["expires_at"],
        created_at=row["created_at"],
        completed_at=row["completed_at"],
    )


def _save_step(conn: sqlite3.Connection, save: StepSave) -> bool:
    fence = {"job_id": save.job_id, "token": save.token}
    if conn.execute(Q["step_fence"], fence).fetchone() is None:
        return False
    args = {"job_id": save.job_id, "name": save.name, "result": save.result, "at": save.at}
    stored = conn.execute(Q["insert_step"], args).fetchone() is not None
    token = save.new_token
    if stored and token is not None:
        conn.execute(
            Q["insert_token"],
            {
                "id": token.id,
                "job_id": save.job_id,
                "tags": json.dumps(list(token.tags)) if token.tags else None,
                "expires_at": token.expires_at,
                "created_at": save.at,
            },
        )
    return True


def _complete_token(conn: sqlite3.Connection, c: TokenCompletion) -> TokenCompletionResult:
    row = conn.execute(Q["complete_token"], {"id": c.id, "data": c.data, "now": c.now}).fetchone()
    if row is None:
        return TokenCompletionResult(completed=False)
    job_id = int(row[0])
    job = conn.execute(
        Q["resume_on_token"], {"job_id": job_id, "token": c.id, "now": c.now}
    ).fetchone()
    if job is None:  # not waiting on it (yet): its suspend will see the token completed
        return TokenCompletionResult(completed=True, job_id=job_id)
    store_event(conn, job_id, "resumed", job, job[2], c.now, {"reason": "token"})
    return TokenCompletionResult(
        completed=True,
        job_id=job_id,
        resumed=True,
        job_name=job[0],
        tenant=job[1],
        attempt=job[2],
    )


def _resume_due(conn: sqlite3.Connection, params: ResumeParams) -> list[ResumedJob]:
    if params.limit <= 0:
        return []
    due = conn.execute(Q["due_waiting"], {"now": params.now, "limit": params.limit}).fetchall()
    if not due:
        return []
    conn.execute(Q["resume_jobs"], {"ids": json.dumps([r["id"] for r in due]), "now": params.now})
    tokens = [r["wait_token"] for r in due if r["wait_token"] is not None]
    expired: set[str] = set()
    if tokens:
        rows = conn.execute(Q["expire_tokens"], {"ids": json.dumps(tokens)}).fetchall()
        expired = {r[0] for r in rows}
    events = []
    resumed = []
    for r in due:
        token = r["wait_token"]
        data = {"reason": "due"} if token is None else {"reason": "expired", "token": token}
        events.append(
            {
                "job_id": r["id"],
                "type": "resumed",
                "job_name": r["name"],
                "tenant": r["tenant"],
                "attempt": r["attempts"],
                "at": params.now,
                "data": json.dumps(data),
            }
        )
        gone = token if token in expired else None
        resumed.append(ResumedJob(r["id"], r["name"], r["tenant"], r["attempts"], gone))
    conn.executemany(Q["insert_event"], events)
    return resumed


class Durable(SQLiteConnection):
    """Steps, tokens and ``resume_due`` (the waits themselves are outcomes)."""

    async def save_step(self, save: StepSave) -> bool:
        return await self._run(lambda c: _save_step(c, save))

    async def load_steps(self, job_id: int) -> list[StepRecord]:
        rows = await self._run(
            lambda c: c.execute(Q["load_steps"], {"job_id": job_id}).fetchall(), write=False
        )
        return [StepRecord(r["name"], r["result"], r["at"]) for r in rows]

    async def complete_token(self, completion: TokenCompletion) -> TokenCompletionResult:
        result = await self._run(lambda c: _complete_token(c, completion))
        if result.resumed:
            self.wake()
        return result

    async def get_token(self, token_id: str) -> TokenRecord | None:
        row = await self._run(
            lambda c: c.execute(Q["get_token"], {"id": token_id}).fetchone(), write=False
        )
        return None if row is None else _token(row)

    async def list_tokens(self, job_id: int) -> list[TokenRecord]:
        rows = await self._run(
            lambda c: c.execute(Q["list_tokens"], {"job_id": job_id}).fetchall(), write=False
        )
        return [_token(r) for r in rows]

    async def resume_due(self, params: ResumeParams) -> list[ResumedJob]:
        resumed = await self._run(lambda c: _resume_due(c, params))
        if resumed:
            self.wake()
        return resumed

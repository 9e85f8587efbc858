"""The worker's hot path on SQLite: claim, complete, heartbeat, progress and logs.

- **Claim**: one read of the partial ``conveyor_jobs_ready`` index for candidates (paused
  channels and groups with a running job are left out in SQL; at most one job per group
  is kept), then one ``UPDATE … RETURNING`` that flips them to running and one
  ``INSERT … SELECT`` for their ``started`` events, all in one ``BEGIN IMMEDIATE``
  transaction (SQLite has a single writer, so nothing else claims meanwhile).
- **Complete**: one ``UPDATE … FROM json_each`` applies a whole batch of fenced
  outcomes; removals (``remove_on_complete``) are a ``DELETE`` each; the events go in one
  ``executemany``. A durable wait on a token (``Outcome.wait_token``) first reads its
  token in the same write transaction (only batches that hold one do): a token that is
  no longer waitable turns the wait into ``queued`` with a ``resumed`` event. SQLite
  serialises writers, so ``complete_token`` runs wholly before or after: a completion is
  never lost to a racing suspend.
- ``complete_and_claim`` runs both in one transaction: one lock, one commit.
- **Logs**: one ``executemany`` of an ``INSERT … SELECT`` fenced by the lease token, so
  a stale worker's lines are dropped.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from conveyor.backends.base import (
    ClaimedJob,
    ClaimParams,
    HeartbeatParams,
    HeartbeatResult,
    LogEntry,
    Outcome,
    ProgressUpdate,
    as_stored,
)
from conveyor.backends.sqlite.connection import Q, SQLiteConnection
from conveyor.backends.sqlite.events import store_event
from conveyor.backends.sqlite.flow import limited_claim, record_starts
from conveyor.backends.sqlite.workflows import settle_outcomes
from conveyor.models import JobState

__all__ = ["HotPath"]


def _claim_tx(params: ClaimParams) -> Callable[[sqlite3.Connection], list[ClaimedJob]]:
    def tx(conn: sqlite3.Connection) -> list[ClaimedJob]:
        if params.limit <= 0:
            return []
        if params.limits or params.fair:
            return _limited_claim_tx(conn, params)
        args = {
            "now": params.now,
            "channels": json.dumps(params.channels) if params.channels is not None else None,
            "include": json.dumps(params.include) if params.include is not None else None,
            "exclude": json.dumps(params.exclude) if params.exclude is not None else None,
            "scan": params.limit * 2 if params.limit < 50 else params.limit + 50,
        }
        ids: list[int] = []
        groups: set[str] = set()
        for row in conn.execute(Q["claim_candidates"], args):
            group = row[1]
            if group is not None:
                if group in groups:
                    continue  # at most one job per group in a batch
                groups.add(group)
            ids.append(row[0])
            if len(ids) >= params.limit:
                break
        claimed = _mark(conn, params, ids)
        claimed.sort(key=lambda j: (j.priority, j.run_at, j.id))
        return claimed

    return tx


def _limited_claim_tx(conn: sqlite3.Connection, params: ClaimParams) -> list[ClaimedJob]:
    """A claim under limits or fairness (``flow.py``): its jobs in claim order, their
    rate starts recorded in the same transaction."""
    ids, gate = limited_claim(conn, params)
    claimed = _mark(conn, params, ids)
    record_starts(conn, params, gate)
    position = {job_id: i for i, job_id in enumerate(ids)}
    claimed.sort(key=lambda j: position[j.id])
    return claimed


def _mark(conn: sqlite3.Connection, params: ClaimParams, ids: list[int]) -> list[ClaimedJob]:
    """Flip the chosen queued jobs to running and store their ``started`` events."""
    if not ids:
        return []
    id_json = json.dumps(ids)
    rows = conn.execute(
        Q["claim_mark"],
        {
            "ids": id_json,
            "token": params.token,
            "lease_expires_at": params.lease_expires_at,
            "now": params.now,
            "worker_id": params.worker_id,
        },
    ).fetchall()
    conn.execute(Q["claim_events"], {"ids": id_json, "now": params.now})
    return [
        ClaimedJob(
            id=r["id"],
            name=r["name"],
            payload=r["payload"],
            attempts=r["attempts"],
            max_attempts=r["max_attempts"],
            channel=r["channel"],
            priority=r["priority"],
            tenant=r["tenant"],
            group=r["group_key"],
            tags=tuple(json.loads(r["tags"])) if r["tags"] else (),
            options=r["options"],
            run_at=r["run_at"],
            created_at=r["created_at"],
            token=params.token,
            remove_on_complete=bool(r["remove_on_complete"]),
            stalls=r["stalls"],
            max_stalls=r["max_stalls"],
        )
        for r in rows
    ]


def _token_waits(
    conn: sqlite3.Connection, outcomes: Sequence[Outcome], rows: list[dict[str, Any]]
) -> dict[int, str | None]:
    """Waits on a token (``Outcome.wait_token``), checked in the caller's write
    transaction, so that no ``complete_token`` (a write too) comes between the check and
    the wait: a waitable token (pending, unexpired) is stored as the job's
    ``wait_token``; otherwise the row becomes queued at ``at`` (flagged ``resumed``).
    The diverted ones: job id -> the token to mark expired (a pending one past its
    expiry), else None."""
    diverted: dict[int, str | None] = {}
    for o, row in zip(outcomes, rows, strict=True):
        if o.wait_token is None or o.state is not JobState.WAITING:
            continue
        token = conn.execute(Q["token_waitable"], {"id": o.wait_token}).fetchone()
        pending = token is not None and token[0] == "pending"
        if pending and (token[1] is None or token[1] > o.at):
            row["wait_token"] = o.wait_token
            continue
        row.update(state=JobState.QUEUED.value, run_at=o.at, resumed=1)
        diverted[o.job_id] = o.wait_token if pending else None
    return diverted


#: What ``_complete_tx`` found: applied per outcome, whether a job went back to the
#: queue or freed its group (waiting workers should look again), and the outcomes stored
#: as something else (index -> "resumed" | "cancelled", for ``as_stored``).
Completed = tuple[list[bool], bool, dict[int, str]]


def _complete_tx(outcomes: Sequence[Outcome]) -> Callable[[sqlite3.Connection], Completed]:
    """The transaction of ``complete_many`` (see :data:`Completed`). It changes no
    outcome: it may run again after lock contention."""
    kept = [o for o in outcomes if not o.remove]
    rows: list[dict[str, Any]] = [
        {
            "id": o.job_id,
            "token": o.token,
            "state": o.state.value,
            "result": o.result,
            "error": o.error,
            "refund": 1 if o.refund_attempt else 0,
            "stall": 1 if o.stall else 0,
            "run_at": o.run_at,
            "at": o.at,
            "expired_before": o.expired_before,
            "again": 1 if o.yields_to_cancel else 0,
        }
        for o in kept
    ]
    # Only a batch with a token wait reads tokens (and builds its JSON in the transaction).
    token_waits = any(o.wait_token is not None for o in kept)
    batch = None if token_waits else json.dumps(rows)
    removals = [o for o in outcomes if o.remove]

    def tx(conn: sqlite3.Connection) -> Completed:
        diverted: dict[int, str | None] = {}
        if token_waits:
            diverted = _token_waits(conn, kept, rows)
        outcomes_json = batch if batch is not None else json.dumps(rows)
        rows_back = conn.execute(Q["finish_many"], {"outcomes": outcomes_json}).fetchall()
        done: dict[int, tuple[str, str | None, int]] = {r[0]: (r[1], r[2], r[3]) for r in rows_back}
        freed = any(r[4] is not None for r in rows_back)
        # a cancel requested while it ran: stored as cancelled instead of running again
        cancelled = {r[0] for r in rows_back if r[7] == "cancelled"}
        changed = {
            i: "cancelled" if o.job_id in cancelled else "resumed"
            for i, o in enumerate(outcomes)
            if o.job_id in done
            and o.yields_to_cancel
            and (o.job_id in cancelled or o.job_id in diverted)
        }
        ends = outcomes
        if changed:  # the rest of the transaction goes by what was stored
            ends = [copy.copy(o) for o in outcomes]
            as_stored(ends, changed)
        # Workflows: jobs with dependents or a batch (workflows.py), by their markers.
        marked = [(r[0], r[5], r[6]) for r in rows_back if r[5] or r[6] is not None]
        for o in removals:
            args = {"job_id": o.job_id, "token": o.token, "expired_before": o.expired_before}
            row = conn.execute(Q["finish_remove"], args).fetchone()
            if row is not None:
                conn.execute(Q["delete_job_children"], {"job_id": o.job_id})
                done[o.job_id] = (row[0], row[1], row[2])
                freed = freed or row[3] is not None
                if row[4] or row[5] is not None:
                    marked.append((o.job_id, row[4], row[5]))
        events = []
        for o in ends:
            hit = done.get(o.job_id)
            if hit is not None:
                events.append(
                    {
                        "job_id": o.job_id,
                        "type": o.event,
                        "job_name": hit[0],
                        "tenant": hit[1],
                        "attempt": hit[2] + (1 if o.refund_attempt else 0),
                        "at": o.at,
                        "data": o.event_data,
                    }
                )
        conn.executemany(Q["insert_event"], events)
        requeued = any(
            o.state in (JobState.QUEUED, JobState.SCHEDULED) and o.job_id in done for o in ends
        )
        if diverted:
            expire = [t for i, t in diverted.items() if t is not None and i in done]
            if expire:
                conn.execute(Q["expire_tokens"], {"ids": json.dumps(expire)})
            requeued = requeued or any(i in done and i not in cancelled for i in diverted)
        if marked:
            requeued = settle_outcomes(conn, ends, marked) or requeued
        return [o.job_id in done for o in outcomes], freed or requeued, changed

    return tx


class HotPath(SQLiteConnection):
    """The calls a worker makes for every job it runs."""

    async def claim(self, params: ClaimParams) -> list[ClaimedJob]:
        return await self._run(_claim_tx(params))

    async def complete_many(self, outcomes: Sequence[Outcome]) -> list[bool]:
        applied, wake, changed = await self._run(_complete_tx(outcomes))
        as_stored(outcomes, changed)
        if wake:
            self.wake()
        return applied

    async def complete_and_claim(
        self, outcomes: Sequence[Outcome], claim: ClaimParams
    ) -> tuple[list[bool], list[ClaimedJob]]:
        """Both in one write transaction: one lock, one commit."""
        complete, take = _complete_tx(outcomes), _claim_tx(claim)

        def tx(conn: sqlite3.Connection) -> tuple[Completed, list[ClaimedJob]]:
            return complete(conn), take(conn)

        (applied, wake, changed), jobs = await self._run(tx)
        as_stored(outcomes, changed)
        if wake:  # the claim saw them, but it may have filtered them out (names, channels)
            self.wake()
        return applied, jobs

    async def heartbeat(self, params: HeartbeatParams) -> HeartbeatResult:
        if not params.jobs:
            return HeartbeatResult(frozenset(), frozenset())
        ids = [job_id for job_id, _ in params.jobs]
        tokens = {str(job_id): token for job_id, token in params.jobs}

        def tx(conn: sqlite3.Connection) -> HeartbeatResult:
            rows = conn.execute(
                Q["heartbeat"],
                {
                    "ids": json.dumps(ids),
                    "tokens": json.dumps(tokens),
                    "lease_expires_at": params.lease_expires_at,
                },
            ).fetchall()
            held = {r[0] for r in rows}
            return HeartbeatResult(
                lost=frozenset(set(ids) - held),
                cancel_requested=frozenset(r[0] for r in rows if r[1]),
            )

        return await self._run(tx)

    async def cancel_requests(self, job_ids: Sequence[int]) -> frozenset[int]:
        if not job_ids:
            return frozenset()
        rows = await self._run(
            lambda c: c.execute(
                Q["cancel_requests"], {"ids": json.dumps(list(job_ids))}
            ).fetchall(),
            write=False,
        )
        return frozenset(r[0] for r in rows)

    async def set_progress(self, update: ProgressUpdate) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                Q["set_progress"],
                {"job_id": update.job_id, "token": update.token, "progress": update.progress},
            ).fetchone()
            if row is None:
                return False
            data = {"progress": update.progress}
            store_event(conn, update.job_id, "progress", row, row[2], update.now, data)
            return True

        return await self._run(tx)

    async def append_logs(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        rows = [
            {
                "job_id": e.job_id,
                "token": e.token,
                "at": e.at,
                "level": e.level,
                "message": e.message,
                "attempt": e.attempt,
            }
            for e in entries
        ]
        await self._run(lambda c: c.executemany(Q["insert_log"], rows) and None)

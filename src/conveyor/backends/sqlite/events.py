"""Events on SQLite: storing them, a job's history, and the cross-process event stream.

A job's ``enqueued`` event is not stored: its row's ``created_at`` is that event (see
``schema.sql``), so reads take it from ``conveyor_jobs``. Every other event is a row of
``conveyor_events``. The stream cursor is ``"<last event id>:<last job id>"``, one
position in each of the two; every event ``read_events`` returns carries the cursor as
it stands right after it (``Event.id``). ``get_events`` leaves ``id`` None: a job's own
history has no position in the job stream to resume from.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from itertools import islice
from typing import Any

from conveyor.backends.base import EventPage, EventRead
from conveyor.backends.rows import event_from_row
from conveyor.backends.sqlite.connection import Q, SQLiteConnection
from conveyor.models import Event

__all__ = ["Events", "store_event"]

EVENTS_POLL = 0.02  # seconds between reads while read_events waits for the first event


def store_event(
    conn: sqlite3.Connection,
    job_id: int,
    type_: str,
    job: Sequence[Any],
    attempt: int,
    at: float,
    data: dict[str, Any] | None = None,
) -> None:
    """Store one event for a job (inside the caller's transaction); ``job`` is a row
    starting (name, tenant, …)."""
    conn.execute(
        Q["insert_event"],
        {
            "job_id": job_id,
            "type": type_,
            "job_name": job[0],
            "tenant": job[1],
            "attempt": attempt,
            "at": at,
            "data": json.dumps(data) if data is not None else None,
        },
    )


def _order(item: tuple[sqlite3.Row, bool]) -> tuple[float, bool]:
    """Oldest first; at the same instant ``enqueued`` comes before the rest."""
    return item[0]["at"], item[0]["type"] != "enqueued"


class Events(SQLiteConnection):
    """A job's events and the event stream of every process."""

    async def get_events(self, job_id: int) -> list[Event]:
        rows = await self._run(
            lambda c: c.execute(Q["get_events"], {"job_id": job_id}).fetchall(), write=False
        )
        return [event_from_row(dict(r)) for r in rows]

    async def read_events(self, params: EventRead) -> EventPage:
        if params.after is None:
            row = await self._run(lambda c: c.execute(Q["max_event_id"]).fetchone(), write=False)
            return EventPage([], f"{row[0]}:{row[1]}")
        if params.limit <= 0:
            return EventPage([], params.after)
        ev_part, _, job_part = params.after.partition(":")
        ev_cursor, job_cursor = int(ev_part), int(job_part or 0)
        limit = params.limit
        deadline = time.monotonic() + params.timeout

        def read(c: sqlite3.Connection) -> tuple[list[sqlite3.Row], list[sqlite3.Row]]:
            args = {"limit": limit}
            events = c.execute(Q["read_events"], {**args, "after": ev_cursor}).fetchall()
            jobs = c.execute(Q["read_enqueued"], {**args, "after": job_cursor}).fetchall()
            return events, jobs

        while True:
            events, jobs = await self._run(read, write=False)
            if events or jobs or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(EVENTS_POLL, max(0.0, deadline - time.monotonic())))
        # At most ``limit`` in all, merged by time; the merge keeps each stream in id
        # order, so every event's position is a prefix of each stream and the cursor as
        # it stands after that event (its ``id``) resumes right after it.
        merged = heapq.merge(((r, False) for r in jobs), ((r, True) for r in events), key=_order)
        page: list[Event] = []
        for row, stored in islice(merged, limit):
            if stored:
                ev_cursor = max(ev_cursor, row["id"])
            else:
                job_cursor = max(job_cursor, row["id"])
            page.append(replace(event_from_row(dict(row)), id=f"{ev_cursor}:{job_cursor}"))
        return EventPage(page, f"{ev_cursor}:{job_cursor}")

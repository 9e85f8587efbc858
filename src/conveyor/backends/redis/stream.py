"""``read_events`` over the queue's event STREAM.

A script call appends one stream entry per 50 events it stored (not one per event);
field ``e`` of an entry holds its events as a JSON array. A cursor is the id of the last
entry read in full, or ``<entry id>/<n>`` when only the first ``n`` events of that entry
were handed out (``limit`` cut it short). The stream keeps about the last 20,000 entries.

Each event read carries its own cursor as its ``id``: the cursor as it stands right
after it (``<entry id>/<n>`` for the n-th event of an entry, the entry id alone for the
last one), so ``after=event.id`` resumes right after that event, with no loss and no
repeat. An entry never changes once written, so these ids stay valid.

Reads use dedicated connections (:class:`~conveyor.backends.redis.wakeup.BlockingConnection`)
because ``XREAD BLOCK`` holds its connection while it waits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from redis.asyncio.connection import AbstractConnection

from conveyor.backends.redis.wakeup import BlockingConnection
from conveyor.backends.rows import event_from_row
from conveyor.errors import BackendError
from conveyor.models import Event

__all__ = ["EventStream"]

_IDLE_CONNECTIONS = 4


def _range_entries(reply: Any) -> list[tuple[str, Any]]:
    """(entry id, fields) pairs of an XRANGE / XREVRANGE reply."""
    return [(str(e[0]), e[1]) for e in reply or ()]


def _read_entries(reply: Any) -> list[tuple[str, Any]]:
    """(entry id, fields) pairs of an XREAD reply: RESP3 sends a map of stream ->
    entries, RESP2 a list of [stream, entries] pairs; None when nothing came."""
    if reply is None:
        return []
    per_stream = reply.values() if isinstance(reply, dict) else (pair[1] for pair in reply)
    return [pair for entries in per_stream for pair in _range_entries(entries)]


def _events(entry_id: str, fields: Any) -> list[Event]:
    """The events of one entry, each with its cursor as its ``id`` (module docstring)."""
    if isinstance(fields, dict):
        text = fields.get("e")
    else:
        flat = list(fields)
        text = next((flat[i + 1] for i in range(0, len(flat) - 1, 2) if flat[i] == "e"), None)
    rows = json.loads(text) if text else []
    last = len(rows)
    return [
        replace(event_from_row(row), id=entry_id if n == last else f"{entry_id}/{n}")
        for n, row in enumerate(rows, 1)
    ]


def _parse_cursor(cursor: str) -> tuple[str, int]:
    entry, _, skip = cursor.partition("/")
    try:
        return entry, int(skip) if skip else 0
    except ValueError:
        raise BackendError(f"not an event cursor of the Redis backend: {cursor!r}") from None


class EventStream:
    """Reads one queue's event stream.

    Args:
        key: the STREAM key.
        factory: makes a new (unconnected) connection to the server.
    """

    def __init__(self, key: str, factory: Callable[[], AbstractConnection]) -> None:
        self._key = key
        self._factory = factory
        self._idle: list[BlockingConnection] = []

    async def read(self, after: str | None, limit: int, timeout: float) -> tuple[list[Event], str]:
        """Events after ``after`` (None: the current end), at most ``limit`` (0: none,
        only the cursor, at once), waiting up to ``timeout`` for the first."""
        if limit <= 0 and after is not None:
            _parse_cursor(after)  # still refuse a foreign cursor
            return [], after
        conn = self._idle.pop() if self._idle else BlockingConnection(self._factory)
        try:
            if limit <= 0:
                return [], await self._end(conn)
            return await self._read(conn, after, int(limit), max(timeout, 0.0))
        finally:
            if len(self._idle) < _IDLE_CONNECTIONS:
                self._idle.append(conn)
            else:
                await conn.close()

    async def _end(self, conn: BlockingConnection) -> str:
        """The cursor of the stream's current end."""
        last = _range_entries(await conn.call("XREVRANGE", self._key, "+", "-", "COUNT", 1, wait=0))
        return last[0][0] if last else "0-0"

    async def _read(
        self, conn: BlockingConnection, after: str | None, limit: int, timeout: float
    ) -> tuple[list[Event], str]:
        if after is None:
            after = await self._end(conn)
        entry, skip = _parse_cursor(after)
        events: list[Event] = []
        cursor = entry
        if skip:
            rows = _range_entries(await conn.call("XRANGE", self._key, entry, entry, wait=0))
            rest: Sequence[Event] = _events(entry, rows[0][1])[skip:] if rows else []
            if len(rest) > limit:
                return list(rest[:limit]), f"{entry}/{skip + limit}"
            events.extend(rest)
        args: list[Any] = ["XREAD", "COUNT", limit]
        if timeout > 0 and not events:
            args += ["BLOCK", max(int(timeout * 1000), 1)]
        wait = timeout if "BLOCK" in args else 0.0
        reply = await conn.call(*args, "STREAMS", self._key, entry, wait=wait)
        for entry_id, fields in _read_entries(reply):
            batch = _events(entry_id, fields)
            room = limit - len(events)
            if len(batch) > room:
                events.extend(batch[:room])
                return events, f"{entry_id}/{room}"
            events.extend(batch)
            cursor = entry_id
        return events, cursor

    async def close(self) -> None:
        for conn in self._idle:
            await conn.close()
        self._idle.clear()

"""Flow control on SQLite: the claim under limits and fairness, and the stored channel
limits (DESIGN.md "Flow control: limits and fairness"; the contract is ``ClaimLimit``).

A claim with no limits and no fairness never comes here (``hotpath.py`` keeps its one
read of the ready index). A limited claim runs in the claim's write transaction (SQLite
has one writer, so the counts it reads cannot change under it):

- **Counts** (:class:`Gate`): concurrency from the running rows (few: bounded by the
  workers' slots; a rescued job is no longer running, so its slot is free), rates from
  the span log ``conveyor_rate_spans``: the starts of each span whose latest start is
  in the window (``(now - per, now]``, or later), one row per span of
  ``rate_span(per)`` and key value however many jobs started in it; the jobs the claim
  takes count as they are taken. No count of running jobs is stored, so none can
  drift.
  A ``name`` limit keyed by ``group`` replaces the one-running-per-group rule for its
  jobs; other grouped jobs keep it (a group with a running job is busy).
- **The walk**: the due jobs in claim order, read lazily from the ready index, held-back
  ones skipped in Python. It ends when the claim has ``limit`` jobs, or when it has
  passed ``WALK_SKIPS`` held-back jobs: then the cell merge decides the claim instead.
- **The cell merge** (always, under fairness): every job's limit keys, group and fair
  value are functions of its cell (channel, name, tenant, group), so a cell is wholly
  allowed or wholly held back, and stays held back for the rest of the claim (counts only
  grow). ``flow_cells`` finds every cell by a skip scan of ``conveyor_jobs_ready_cells``
  (one index seek per cell, however long its backlog) with its first due job; the merge
  takes cells' heads in claim order (``(round, priority, run_at, id)``, the round of a
  fair channel's value being one more than the jobs taken from it so far), dropping a
  cell when its head is held back, and reads a cell's next jobs only when it takes from
  it. A full key's 100,000 jobs cost one seek, not 100,000 rows. The cells index is
  created by the first claim of a store that needs the merge (``schema.sql`` says why).
- **Starts**: each taken job records one start per distinct (scope, target, key) of the
  rate limits it falls under, in the span holding the claim's ``now``: the claim adds
  its starts to that span's row per key value and moves the row's latest start to its
  ``now`` (one upsert per key value, usually one in all). A row counts in full while
  its latest start is in the window: never a start too few, a start at most one span
  too long, and the starts of one instant exactly. Spans no window counts any more
  (with a second to spare for workers whose clocks are behind) are deleted by the
  claims that count them, through the low end of the same key (only the expired rows
  are touched).
"""

from __future__ import annotations

import heapq
import json
import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from conveyor.backends.base import ChannelLimitRecord, ClaimLimit, ClaimParams
from conveyor.backends.sqlite.connection import Q, SQLiteConnection

__all__ = ["WALK_SKIPS", "FlowControl", "Gate", "limited_claim", "record_starts", "span_end"]

#: Held-back jobs the ordered walk passes before the cell merge decides the claim.
WALK_SKIPS = 256

# A claimed row: (id, name, channel, tenant, group_key, priority, run_at).
Row = tuple[Any, ...]
_ID, _NAME, _CHANNEL, _TENANT, _GROUP, _PRIORITY, _RUN_AT = range(7)
_KEY_COLUMN = {"tenant": _TENANT, "group": _GROUP}

#: What a rate's starts are logged under: (scope, target, key), key '' for none.
Triple = tuple[str, str, str]


def _value(limit: ClaimLimit, row: Row) -> str | None:
    """The key value of ``row`` under ``limit``: None for the whole scope, else the job's
    group or tenant (None, the one count of jobs without one)."""
    return None if limit.key is None else row[_KEY_COLUMN[limit.key]]


@dataclass
class Gate:
    """What a claim may still take: the counts of every limit's key values and the busy
    groups, from the store, updated by each job taken."""

    limits: tuple[ClaimLimit, ...]
    now: float
    by_name: dict[str, list[tuple[int, ClaimLimit]]] = field(default_factory=dict)
    by_channel: dict[str, list[tuple[int, ClaimLimit]]] = field(default_factory=dict)
    group_limited: set[str] = field(default_factory=set)  # names whose limit replaces groups
    counts: dict[tuple[int, str | None], int] = field(default_factory=dict)
    busy_groups: set[str] = field(default_factory=set)
    #: The rate limits by index, with what their starts are logged under.
    rates: dict[int, Triple] = field(default_factory=dict)
    #: Per logged triple, the end of the span its starts go to (see :func:`span_end`).
    ends: dict[Triple, float] = field(default_factory=dict)
    #: The starts of the jobs taken, per logged triple and key value ('' for none).
    starts: dict[tuple[Triple, str], int] = field(default_factory=dict)

    @classmethod
    def load(cls, conn: sqlite3.Connection, params: ClaimParams) -> Gate:
        gate = cls(params.limits, params.now)
        for i, limit in enumerate(params.limits):
            scoped = gate.by_name if limit.scope == "name" else gate.by_channel
            scoped.setdefault(limit.target, []).append((i, limit))
            if limit.scope == "name" and limit.key == "group" and limit.per is None:
                gate.group_limited.add(limit.target)
        concurrency = any(limit.per is None for limit in params.limits)
        for running in conn.execute(Q["flow_running"]):
            row = (None, *running, None, None)
            if row[_GROUP] is not None:
                gate.busy_groups.add(row[_GROUP])
            if concurrency:
                for i, limit in gate.applying(row):
                    if limit.per is None:
                        key = (i, _value(limit, row))
                        gate.counts[key] = gate.counts.get(key, 0) + 1
        for i, limit in enumerate(params.limits):
            if limit.per is not None and limit.span is not None:
                triple = _triple(limit)
                gate.rates[i] = triple
                end = span_end(params.now, limit.span)
                gate.ends[triple] = min(end, gate.ends.get(triple, end))
                args = {
                    "scope": triple[0],
                    "target": triple[1],
                    "key": triple[2],
                    "per": limit.per,
                    "now": params.now,
                }
                for value, n in conn.execute(Q["starts_count"], args):
                    gate.counts[(i, value or None)] = n  # '': jobs without one
        return gate

    def fork(self) -> Gate:
        """A copy to claim with from the same counts."""
        return Gate(
            self.limits,
            self.now,
            self.by_name,
            self.by_channel,
            self.group_limited,
            dict(self.counts),
            set(self.busy_groups),
            self.rates,
            self.ends,
        )

    def applying(self, row: Row) -> Iterable[tuple[int, ClaimLimit]]:
        return [*self.by_name.get(row[_NAME], ()), *self.by_channel.get(row[_CHANNEL], ())]

    def allows(self, row: Row) -> bool:
        group = row[_GROUP]
        if group is not None and row[_NAME] not in self.group_limited and group in self.busy_groups:
            return False  # one running per group, unless a limit keyed by group replaces it
        return all(
            self.counts.get((i, _value(limit, row)), 0) < limit.n for i, limit in self.applying(row)
        )

    def take(self, row: Row) -> None:
        if row[_GROUP] is not None:
            self.busy_groups.add(row[_GROUP])
        recorded: set[Triple] = set()
        for i, limit in self.applying(row):
            value = _value(limit, row)
            self.counts[(i, value)] = self.counts.get((i, value), 0) + 1
            triple = self.rates.get(i)
            if triple is not None and triple not in recorded:
                recorded.add(triple)
                start = (triple, "" if value is None else value)
                self.starts[start] = self.starts.get(start, 0) + 1


def _triple(limit: ClaimLimit) -> Triple:
    return (limit.scope, limit.target, limit.key or "")


def span_end(now: float, span: float) -> float:
    """The end of the span of length ``span`` holding ``now``: ``floor(now / span) * span
    + span`` (``ClaimLimit``), moved one span on where the float arithmetic would put it
    at or before ``now``, so that a start never stops counting before it should.

    A claim under two rates logged under the same triple (the same scope, target and key
    with different windows) puts its starts in the earliest of their spans' ends: any
    end later than the starts is safe for every window, and the shortest span delays
    the shortest window least."""
    end = math.floor(now / span) * span + span
    return end if end > now else end + span


def _args(params: ClaimParams) -> dict[str, Any]:
    return {
        "now": params.now,
        "channels": json.dumps(params.channels) if params.channels is not None else None,
        "include": json.dumps(params.include) if params.include is not None else None,
        "exclude": json.dumps(params.exclude) if params.exclude is not None else None,
    }


def _walk(conn: sqlite3.Connection, params: ClaimParams, gate: Gate) -> list[Row] | None:
    """The claim by the ordered walk, or None when it passed too many held-back jobs."""
    taken: list[Row] = []
    skipped = 0
    cursor = conn.execute(Q["flow_walk"], _args(params))
    try:
        for row in cursor:
            if gate.allows(row):
                gate.take(row)
                taken.append(tuple(row))
                if len(taken) >= params.limit:
                    break
            else:
                skipped += 1
                if skipped > WALK_SKIPS:
                    return None
    finally:
        cursor.close()
    return taken


class _Cell:
    """One cell's due jobs in claim order: its head, then the next ones read on demand."""

    __slots__ = ("ahead", "done", "head")

    def __init__(self, head: Row) -> None:
        self.head = head
        self.ahead: list[Row] = []
        self.done = False

    def advance(self, conn: sqlite3.Connection, now: float, want: int) -> bool:
        """Move to the next job; False when the cell has none left."""
        if not self.ahead and not self.done:
            h = self.head
            args = {
                "channel": h[_CHANNEL],
                "name": h[_NAME],
                "tenant": h[_TENANT] or "",
                "grp": h[_GROUP] or "",
                "now": now,
                "priority": h[_PRIORITY],
                "run_at": h[_RUN_AT],
                "id": h[_ID],
                "limit": max(want, 1),
            }
            self.ahead = [tuple(r) for r in conn.execute(Q["flow_cell_next"], args)]
            self.ahead.reverse()
            self.done = len(self.ahead) < max(want, 1)
        if not self.ahead:
            return False
        self.head = self.ahead.pop()
        return True


def _merge(conn: sqlite3.Connection, params: ClaimParams, gate: Gate) -> list[Row]:
    """The claim by the cell merge (see the module docstring)."""
    fair = dict(params.fair)
    rounds: dict[tuple[str, str | None], int] = {}

    def fair_value(row: Row) -> tuple[str, str | None] | None:
        column = fair.get(row[_CHANNEL])
        return None if column is None else (row[_CHANNEL], row[_KEY_COLUMN[column]])

    def round_of(row: Row) -> int:
        value = fair_value(row)
        return 1 if value is None else rounds.get(value, 0) + 1

    if conn.execute(Q["has_cells_index"]).fetchone() is None:
        conn.execute(Q["create_cells_index"])  # once per store, in this transaction
    heap: list[tuple[int, int, float, int, _Cell]] = []
    for head in conn.execute(Q["flow_cells"], _args(params)):
        row = tuple(head)
        if gate.allows(row):  # a held-back cell is skipped whole: one seek for its backlog
            cell = _Cell(row)
            heap.append((round_of(row), row[_PRIORITY], row[_RUN_AT], row[_ID], cell))
    heapq.heapify(heap)
    taken: list[Row] = []
    while heap and len(taken) < params.limit:
        round_, _, _, _, cell = heapq.heappop(heap)
        row = cell.head
        current = round_of(row)
        if current != round_:  # its fair value was taken from since: a later round
            heapq.heappush(heap, (current, row[_PRIORITY], row[_RUN_AT], row[_ID], cell))
            continue
        if not gate.allows(row):
            continue  # held back, and so is the rest of its cell
        gate.take(row)
        taken.append(row)
        value = fair_value(row)
        if value is not None:
            rounds[value] = current
        if cell.advance(conn, params.now, params.limit - len(taken)):
            nxt = cell.head
            heapq.heappush(heap, (round_of(nxt), nxt[_PRIORITY], nxt[_RUN_AT], nxt[_ID], cell))
    return taken


def limited_claim(conn: sqlite3.Connection, params: ClaimParams) -> tuple[list[int], Gate]:
    """The ids a claim under ``params.limits`` / ``params.fair`` takes, in claim order,
    and the gate holding the starts to record (:func:`record_starts`)."""
    gate = Gate.load(conn, params)
    if not params.fair:
        walker = gate.fork()
        taken = _walk(conn, params, walker)
        if taken is not None:
            return [r[_ID] for r in taken], walker
    merger = gate.fork()
    return [r[_ID] for r in _merge(conn, params, merger)], merger


def record_starts(conn: sqlite3.Connection, params: ClaimParams, gate: Gate) -> None:
    """Add the starts of the jobs taken to their spans, and delete the spans no window
    counts any more (in the claim's transaction)."""
    if gate.starts:
        conn.executemany(
            Q["starts_add"],
            [
                {
                    "scope": triple[0],
                    "target": triple[1],
                    "key": triple[2],
                    "span_end": gate.ends[triple],
                    "value": value,
                    "now": params.now,
                    "n": n,
                }
                for (triple, value), n in gate.starts.items()
            ],
        )
    longest: dict[Triple, float] = {}
    for i, triple in gate.rates.items():
        per = params.limits[i].per or 0.0
        longest[triple] = max(longest.get(triple, 0.0), per)
    for (scope, target, key), per in longest.items():
        args = {"scope": scope, "target": target, "key": key, "per": per, "now": params.now}
        conn.execute(Q["starts_forget"], args)


def _record(row: sqlite3.Row) -> ChannelLimitRecord:
    return ChannelLimitRecord(
        channel=row["channel"],
        concurrency=row["concurrency"],
        rate_n=row["rate_n"],
        rate_per=row["rate_per"],
        fair_by=row["fair_by"],
    )


class FlowControl(SQLiteConnection):
    """The stored channel limits (rows of ``conveyor_channel_limits``)."""

    async def set_channel_limits(self, record: ChannelLimitRecord) -> None:
        empty = (
            record.concurrency is None
            and record.rate_n is None
            and record.rate_per is None
            and record.fair_by is None
        )
        if empty:
            await self._run(
                lambda c: c.execute(Q["delete_channel_limits"], {"channel": record.channel})
            )
            return
        args = {
            "channel": record.channel,
            "concurrency": record.concurrency,
            "rate_n": record.rate_n,
            "rate_per": record.rate_per,
            "fair_by": record.fair_by,
        }
        await self._run(lambda c: c.execute(Q["set_channel_limits"], args))

    async def list_channel_limits(self) -> list[ChannelLimitRecord]:
        rows = await self._run(
            lambda c: c.execute(Q["list_channel_limits"]).fetchall(), write=False
        )
        return [_record(r) for r in rows]

"""The cursor of ``read_events`` (``queue.events()``): two id streams read in step.

The stream is the stored events (``job_events``, by id) and, merged in, each new job's
``enqueued`` event, which is the job's row (``jobs``, by id: see ``get_events`` in
queries.sql). Ids of both come from sequences: taken at insert, visible at commit, so a
smaller id can become visible after a larger one was read. Each stream therefore stops
before an id gap until the gap is filled or known to stay:

- **Settled**: every statement that draws a job or event id runs in a transaction that
  already has an xid (``enqueue_*`` take one first; event inserts follow a write of the
  same statement). A gap below a visible id was drawn before that id, so its holder had
  an xid below the ``xmax`` of the snapshot that saw the visible one. Once a snapshot's
  ``xmin`` reaches that ``xmax`` (the horizon; in a quiet database, that very snapshot)
  every such holder has ended: the gap is a rolled-back id or a deleted job, for good.
  One horizon settles every gap below the largest id its snapshot saw (the mark).
- **Grace**: when a long transaction (anyone's) holds ``xmin`` back, a gap is passed
  once it has been pending ``GAP_GRACE`` seconds of database time.
- **Known gone**: a job id that a visible event names while the same snapshot shows no
  row for it was committed and deleted since (``remove_on_complete``): it passes at once.

A stored event is yielded only once its job's ``enqueued`` event was: the jobs cursor
must have reached its job. A job whose row is gone (``remove_on_complete``, pruned) is
passed like any gap.

Every event read carries, as its ``id``, the cursor as it stands right after it (the
page cut short there), so ``queue.events(since=event.id)`` resumes after it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from conveyor.backends.rows import event_from_row
from conveyor.models import Event

__all__ = ["GAP_GRACE", "EventsCursor", "IdCursor", "Snapshot", "Taken"]

GAP_GRACE = 5.0  # seconds an id gap is waited for while xmin is held back


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The xid bounds and database time of the statement that read the rows."""

    xmin: int
    xmax: int
    now: float


@dataclass(slots=True)
class IdCursor:
    """One id stream: every id up to ``last`` is read or known to stay unused.

    While a gap is pending, ``horizon`` is the ``xmax`` of the snapshot that saw it,
    ``mark`` the largest id that snapshot saw (the horizon settles every gap below it),
    ``seen`` the database time then.
    """

    last: int
    horizon: int | None = None
    mark: int = 0
    seen: float = 0.0

    def passes(self, top: int, snap: Snapshot, mark: int) -> bool:
        """Whether the ids between ``last`` and ``top`` (both exclusive), none of them
        visible in ``snap``, stay unused; ``mark`` is the largest id ``snap`` saw on this
        stream. A gap beyond what the pending horizon covers gets a horizon of its own."""
        if self.horizon is None or top > self.mark:
            self.horizon, self.mark, self.seen = snap.xmax, max(mark, top), snap.now
        return snap.xmin >= self.horizon or snap.now - self.seen >= GAP_GRACE

    def advance(self, to: int) -> None:
        self.last = to
        if self.horizon is not None and to >= self.mark:
            self.horizon = None

    def encode(self) -> str:
        if self.horizon is None:
            return str(self.last)
        return f"{self.last}:{self.horizon}:{self.mark}:{self.seen!r}"

    @classmethod
    def decode(cls, text: str) -> IdCursor:
        last, *pending = text.split(":")
        if len(pending) == 3:
            return cls(int(last), int(pending[0]), int(pending[1]), float(pending[2]))
        return cls(int(last))


@dataclass(slots=True)
class EventsCursor:
    """``"<events cursor>/<jobs cursor>"``; a cursor without the jobs part (``"0"``)
    starts the jobs at 0 too."""

    events: IdCursor
    jobs: IdCursor = field(default_factory=lambda: IdCursor(0))

    def encode(self) -> str:
        return f"{self.events.encode()}/{self.jobs.encode()}"

    @classmethod
    def decode(cls, text: str) -> EventsCursor:
        events, _, jobs = text.partition("/")
        return cls(IdCursor.decode(events), IdCursor.decode(jobs or "0"))

    def take(self, rows: Sequence[Mapping[str, Any]], limit: int) -> list[Event]:
        """The events of one ``read_events`` statement that can be yielded now, oldest
        first, at most ``limit`` (the statement's limit on each stream), moving the
        cursor past them (and past the gaps that stay). Each event's ``id`` is the
        cursor as it stands right after it (see :func:`_with_ids`)."""
        if not rows:
            return []
        before = replace(self.jobs), replace(self.events)
        start = before[1].encode(), before[0].encode()
        enqueued, stored = self._scan(rows, limit)
        merged = _merge(enqueued, stored)
        if len(merged) > limit:
            # Too many: keep the first ``limit``, a prefix of each stream. Scan again
            # from the state before, stopping at those prefixes, so that the cursor
            # moves past exactly what is returned (stopping early is always safe: the
            # rest comes next).
            kept = {id(taken) for taken in merged[:limit]}
            n_enqueued = sum(id(taken) in kept for taken in enqueued)
            self.jobs, self.events = before
            enqueued, stored = self._scan(rows, limit, n_enqueued, limit - n_enqueued)
            merged = _merge(enqueued, stored)
        return _with_ids(merged, *start)

    def _scan(
        self,
        rows: Sequence[Mapping[str, Any]],
        limit: int,
        max_enqueued: int = 1 << 62,
        max_stored: int = 1 << 62,
    ) -> tuple[list[Taken], list[Taken]]:
        """Move the cursor past the rows that can be yielded: the jobs' ``enqueued``
        events (at most ``max_enqueued``) and the stored events (``max_stored``), each
        with its stream's cursor right after it."""
        first = rows[0]
        snap = Snapshot(int(first["xmin"]), int(first["xmax"]), float(first["db_now"]))
        job_rows = [row for row in rows if row["job_row"]]
        event_rows = [row for row in rows if not row["job_row"]]

        jobs = self.jobs
        enqueued: list[Taken] = []
        job_mark = job_rows[-1]["id"] if job_rows else 0
        # Job ids that visible events name but that have no visible row: deleted. The
        # rows read are every visible job after the cursor, or (cut by the limit) every
        # one up to job_mark.
        gone = {row["job_id"] for row in event_rows if row["job_id"] > jobs.last}
        gone -= {row["id"] for row in job_rows}
        if len(job_rows) >= limit:
            gone = {job_id for job_id in gone if job_id < job_mark}
        for row in job_rows:
            if row["type"] is not None and len(enqueued) >= max_enqueued:
                break  # the budget: stop before the next event
            top = row["id"]
            if not (_all_in(jobs.last + 1, top, gone) or jobs.passes(top, snap, job_mark)):
                break
            jobs.advance(top)
            if row["type"] is not None:  # else its `enqueued` event is a stored one
                enqueued.append(Taken(event_from_row(row), jobs.encode(), stored=False))

        events = self.events
        stored: list[Taken] = []
        event_mark = event_rows[-1]["id"] if event_rows else 0
        for row in event_rows:
            if len(stored) >= max_stored:
                break
            if row["id"] != events.last + 1 and not events.passes(row["id"], snap, event_mark):
                break
            job_id = row["job_id"]
            if job_id > jobs.last:
                # Its job's row is not read yet, or gone: then the ids before it are a gap
                # like any other (below it, no visible row is left unread).
                passed = job_id in gone and (
                    _all_in(jobs.last + 1, job_id, gone) or jobs.passes(job_id, snap, job_id)
                )
                if not passed:
                    break
                jobs.advance(job_id)
            events.advance(row["id"])
            stored.append(Taken(event_from_row(row), events.encode(), stored=True))
        return enqueued, stored


@dataclass(frozen=True, slots=True)
class Taken:
    """An event a scan can yield, with its own stream's cursor right after it."""

    event: Event
    cursor: str  # IdCursor.encode() of its stream (events or jobs) after it
    stored: bool  # from the events stream (else a job's row: its ``enqueued`` event)


def _all_in(start: int, stop: int, ids: set[int]) -> bool:
    """Whether every id in ``range(start, stop)`` is in ``ids`` (so: none is missing)."""
    return stop - start <= len(ids) and all(i in ids for i in range(start, stop))


def _merge(enqueued: list[Taken], stored: list[Taken]) -> list[Taken]:
    """Both lists in time order, a job's ``enqueued`` event before its stored ones.

    ``enqueued`` is by job id, ``stored`` by event id. A stored event goes first only
    when it is earlier and its job's ``enqueued`` event cannot be still to come (its job
    id is below the next one's).
    """
    out: list[Taken] = []
    i = k = 0
    while i < len(enqueued) and k < len(stored):
        job, event = enqueued[i].event, stored[k].event
        if event.job_id < job.job_id and event.at < job.at:
            out.append(stored[k])
            k += 1
        else:
            out.append(enqueued[i])
            i += 1
    out.extend(enqueued[i:])
    out.extend(stored[k:])
    return out


def _with_ids(merged: list[Taken], events: str, jobs: str) -> list[Event]:
    """The events, each with its ``id``: the cursor right after it, from the cursor
    before the page (``events`` and ``jobs``, encoded).

    After the first n events of the page, the cursor is each stream's own cursor after
    its last event among them: the events stream's after the last stored one, the jobs
    stream's after the last ``enqueued`` one (else, for either, where it stood before
    the page). That is the page cut short after those n, which is always safe (as in
    :meth:`EventsCursor.take`): what is not yet past on either stream comes next,
    nothing before it comes again, and a stored event still waits for its job's
    ``enqueued`` event as it did."""
    out = []
    for taken in merged:
        if taken.stored:
            events = taken.cursor
        else:
            jobs = taken.cursor
        out.append(replace(taken.event, id=f"{events}/{jobs}"))
    return out

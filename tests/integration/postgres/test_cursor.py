"""The read_events cursor as pure logic: gap rules, encoding, and the merge order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from conveyor.backends.postgres.cursor import (
    GAP_GRACE,
    EventsCursor,
    IdCursor,
    Snapshot,
)


def _snap(xmin: int, xmax: int, now: float = 100.0) -> Snapshot:
    return Snapshot(xmin, xmax, now)


def test_a_gap_waits_for_the_horizon_then_passes_every_gap_its_snapshot_saw() -> None:
    cursor = IdCursor(10)
    assert not cursor.passes(12, _snap(50, 60), mark=20)  # noted, not passed
    assert (cursor.horizon, cursor.mark) == (60, 20)
    assert not cursor.passes(12, _snap(59, 70, 101.0), mark=25)  # xid 59 may hold 11
    assert cursor.passes(12, _snap(60, 70, 101.0), mark=25)
    cursor.advance(12)
    assert cursor.passes(15, _snap(60, 70, 101.0), mark=25)  # below the mark: same horizon
    cursor.advance(20)
    assert cursor.horizon is None  # past the mark: nothing pending
    assert not cursor.passes(22, _snap(60, 80), mark=22)  # a new gap needs a new horizon


def test_a_gap_passes_after_the_grace_while_xmin_is_held_back() -> None:
    cursor = IdCursor(10)
    assert not cursor.passes(12, _snap(5, 60, 100.0), mark=12)
    assert not cursor.passes(12, _snap(5, 61, 100.0 + GAP_GRACE - 0.1), mark=12)
    assert cursor.passes(12, _snap(5, 61, 100.0 + GAP_GRACE), mark=12)


def test_cursor_text_round_trips() -> None:
    cursor = EventsCursor(IdCursor(7, 99, 12, 1234.5), IdCursor(3))
    text = cursor.encode()
    assert text == "7:99:12:1234.5/3"
    assert EventsCursor.decode(text) == cursor
    assert EventsCursor.decode("5") == EventsCursor(IdCursor(5), IdCursor(0))


def _at(second: float) -> datetime:
    return datetime.fromtimestamp(1_800_000_000 + second, UTC)


def _job(job_id: int, at: float, stored_enqueued: bool = False) -> dict[str, Any]:
    return {
        "job_row": True,
        "id": job_id,
        "type": None if stored_enqueued else "enqueued",
        "job_id": job_id,
        "job_name": "j",
        "tenant": None,
        "attempt": 0,
        "at": _at(at),
        "data": None,
    }


def _event(event_id: int, job_id: int, kind: str, at: float) -> dict[str, Any]:
    return {
        "job_row": False,
        "id": event_id,
        "type": kind,
        "job_id": job_id,
        "job_name": "j",
        "tenant": None,
        "attempt": 1,
        "at": _at(at),
        "data": None,
    }


def _rows(*rows: dict[str, Any], xmin: int = 10, xmax: int = 10) -> list[dict[str, Any]]:
    return [{**row, "xmin": xmin, "xmax": xmax, "db_now": 100.0} for row in rows]


def test_take_merges_by_time_with_each_jobs_enqueued_first() -> None:
    cursor = EventsCursor(IdCursor(0), IdCursor(0))
    rows = _rows(
        _job(1, 0.0),
        _job(2, 3.0),
        _job(3, 3.0),
        _event(1, 1, "started", 2.0),
        _event(2, 2, "started", 1.0),  # an earlier clock than its job's: still after it
        _event(3, 1, "completed", 4.0),
    )
    events = cursor.take(rows, 100)
    assert [(e.type, e.job_id) for e in events] == [
        ("enqueued", 1),
        ("started", 1),
        ("enqueued", 2),
        ("started", 2),
        ("enqueued", 3),
        ("completed", 1),
    ]
    assert cursor.encode() == "3/3"


def test_take_stops_stored_events_at_a_job_not_read_yet() -> None:
    cursor = EventsCursor(IdCursor(0), IdCursor(0))
    # job 1 in flight (a gap), job 2 committed and already started
    rows = _rows(_job(2, 0.0), _event(1, 2, "started", 1.0), xmin=5, xmax=9)
    assert cursor.take(rows, 100) == []
    assert cursor.jobs.horizon == 9 and cursor.events.last == 0
    later = _rows(_job(1, 0.0), _job(2, 0.0), _event(1, 2, "started", 1.0), xmin=9, xmax=9)
    events = cursor.take(later, 100)
    assert [(e.type, e.job_id) for e in events] == [
        ("enqueued", 1),
        ("enqueued", 2),
        ("started", 2),
    ]


def test_take_passes_a_job_known_to_be_deleted_at_once() -> None:
    """Job 1 has a stored `enqueued` event (remove_on_complete) and no row any more; job
    2 was pruned (no trace), job 3 is there."""
    cursor = EventsCursor(IdCursor(0), IdCursor(0))
    rows = _rows(
        _job(3, 2.0),
        _event(1, 1, "enqueued", 0.0),
        _event(2, 1, "completed", 1.0),
        xmin=5,
        xmax=9,
    )
    events = cursor.take(rows, 100)
    # job 1 passes (its events name it); job 2 is a gap until the horizon settles
    assert [(e.type, e.job_id) for e in events] == [("enqueued", 1), ("completed", 1)]
    assert cursor.jobs.last == 1 and cursor.jobs.horizon == 9
    events = cursor.take(_rows(_job(3, 2.0), xmin=9, xmax=12), 100)
    assert [(e.type, e.job_id) for e in events] == [("enqueued", 3)]
    assert cursor.encode() == "2/3"


def test_take_does_not_judge_jobs_beyond_the_rows_read() -> None:
    """With the job rows cut by the limit, a job an event names beyond them may be
    there: its events wait for the next read."""
    # jobs 1 and 2 have stored `enqueued` events: their rows take no room in the page
    rows = _rows(
        _job(1, 0.0, stored_enqueued=True),
        _job(2, 0.0, stored_enqueued=True),
        _event(1, 1, "enqueued", 0.0),
        _event(2, 5, "x", 1.0),
    )
    cursor = EventsCursor(IdCursor(0), IdCursor(0))
    assert [(e.type, e.job_id) for e in cursor.take(rows, 2)] == [("enqueued", 1)]
    assert (cursor.events.last, cursor.jobs.last) == (1, 2)
    # not cut (every job row after the cursor was read): job 5 is gone, event 2 passes
    cursor = EventsCursor(IdCursor(0), IdCursor(0))
    assert [(e.type, e.job_id) for e in cursor.take(rows, 3)] == [("enqueued", 1), ("x", 5)]
    assert cursor.encode() == "2/5"


def _read_all(rows: list[dict[str, Any]], limit: int) -> tuple[list[tuple[str, int]], str]:
    """Read ``rows`` (every row there is) ``limit`` at a time, as read_events would: each
    read sees the rows after the cursor, at most ``limit`` of each kind."""
    cursor = EventsCursor(IdCursor(0), IdCursor(0))
    out: list[tuple[str, int]] = []
    while True:
        jobs = [r for r in rows if r["job_row"] and r["id"] > cursor.jobs.last][:limit]
        events = [r for r in rows if not r["job_row"] and r["id"] > cursor.events.last][:limit]
        page = cursor.take(jobs + events, limit)
        assert len(page) <= limit
        if not page:
            return out, cursor.encode()
        out += [(e.type, e.job_id) for e in page]


def test_take_returns_at_most_limit_and_the_cursor_moves_past_those_only() -> None:
    rows = _rows(
        _job(1, 0.0),
        _job(2, 0.5, stored_enqueued=True),  # its `enqueued` event is event 2
        _job(3, 3.0),
        _job(6, 6.0),  # jobs 4 and 5 were removed: only their events are left
        _event(1, 1, "started", 1.0),
        _event(2, 2, "enqueued", 0.5),
        _event(3, 2, "started", 1.5),
        _event(4, 4, "enqueued", 4.0),
        _event(5, 4, "completed", 4.5),
        _event(6, 1, "completed", 5.0),
        _event(7, 5, "enqueued", 5.5),
        _event(8, 6, "started", 7.0),
    )
    everything, end = _read_all(rows, 100)
    assert len(everything) == 11 and end == "8/6"
    for limit in (1, 2, 3, 4, 5, 7):
        assert _read_all(rows, limit) == (everything, end), limit

    cursor = EventsCursor(IdCursor(0), IdCursor(0))
    assert [(e.type, e.job_id) for e in cursor.take(rows, 3)] == everything[:3]
    assert cursor.encode() == "2/2"  # job 2 passed with its stored `enqueued` event


def test_a_cut_read_keeps_the_gap_it_saw() -> None:
    """Cut by the limit before a gap it waits on, a read still notes the gap."""
    cursor = EventsCursor(IdCursor(0), IdCursor(0))
    rows = _rows(_job(1, 0.0), _job(2, 1.0), _job(4, 2.0), xmin=5, xmax=9)
    assert [(e.type, e.job_id) for e in cursor.take(rows, 1)] == [("enqueued", 1)]
    assert cursor.encode() == "0/1"
    assert [(e.type, e.job_id) for e in cursor.take(rows[1:], 3)] == [("enqueued", 2)]
    assert cursor.jobs.last == 2 and cursor.jobs.horizon == 9  # job 3 may be in flight


def test_a_gap_passes_at_once_when_no_transaction_is_in_flight() -> None:
    """xmin == xmax: every holder of an id below a visible one has ended."""
    cursor = IdCursor(10)
    assert cursor.passes(13, _snap(60, 60), mark=13)

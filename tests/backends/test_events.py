"""What a job leaves behind: get_events, read_events (the queue-wide cursor), and
append_logs / get_logs."""

from __future__ import annotations

import asyncio

from conveyor.backends.base import (
    Backend,
    EventPage,
    EventRead,
    LogEntry,
    ProgressUpdate,
)
from conveyor.models import Event, JobState, LogRecord
from tests.backends.conftest import Store
from tests.backends.helpers import (
    NOW,
    claim_ids,
    elapsed,
    enqueue,
    error,
    finish,
    new_job,
    ts,
)

AT_ONCE = 5.0

# -- get_events ---------------------------------------------------------------------------


async def test_get_events_tells_a_jobs_story_in_order(backend: Backend) -> None:
    job_id, other = await enqueue(backend, new_job("story", tenant="acme"), new_job("other"))
    await claim_ids(backend, token="t1", include=("story",))
    await finish(
        backend,
        job_id,
        "t1",
        state=JobState.QUEUED,
        run_at=NOW + 2,
        at=NOW + 1,
        event="retrying",
        event_data='{"delay": 2}',
    )
    await claim_ids(backend, token="t2", include=("story",), now=NOW + 2)
    assert await backend.set_progress(ProgressUpdate(job_id, "t2", 60, NOW + 3))
    await finish(backend, job_id, "t2", at=NOW + 4, result='"ok"')
    events = await backend.get_events(job_id)
    assert all(isinstance(e, Event) for e in events)
    assert {e.job_id for e in events} == {job_id}  # only this job's
    known = {"started", "retrying", "progress", "completed"}
    story = [(e.type, e.attempt, ts(e.at)) for e in events if e.type in known]
    assert story == [
        ("started", 1, NOW),
        ("retrying", 1, NOW + 1),
        ("started", 2, NOW + 2),
        ("progress", 2, NOW + 3),
        ("completed", 2, NOW + 4),
    ]
    retrying = next(e for e in events if e.type == "retrying")
    assert (retrying.job_name, retrying.tenant, dict(retrying.data)) == (
        "story",
        "acme",
        {"delay": 2},
    )
    assert "started" not in [e.type for e in await backend.get_events(other)]
    assert await backend.get_events(555_555) == []


# -- read_events --------------------------------------------------------------------------


async def read(
    backend: Backend, after: str | None, limit: int = 100, timeout: float = 0
) -> EventPage:
    page = await backend.read_events(EventRead(after=after, limit=limit, timeout=timeout))
    assert isinstance(page, EventPage) and isinstance(page.cursor, str)
    return page


async def test_a_none_cursor_reads_only_what_comes_next(backend: Backend) -> None:
    a, b, c = await enqueue(backend, new_job("a"), new_job("b"), new_job("c"))
    await claim_ids(backend, token="t", include=("a",))  # stored before any cursor
    assert (await read(backend, None)).events == []
    start = await read(backend, None, limit=0)  # just the cursor
    assert start.events == []
    await claim_ids(backend, token="t", include=("b",))
    await claim_ids(backend, token="t", include=("c",), now=NOW + 1)
    assert await backend.set_progress(ProgressUpdate(b, "t", 10, NOW + 2))

    first = await read(backend, start.cursor, limit=2)
    assert len(first.events) == 2
    rest = await read(backend, first.cursor, limit=100)
    seen = [(e.type, e.job_id) for e in first.events + rest.events]
    assert seen == [("started", b), ("started", c), ("progress", b)]
    assert (await read(backend, rest.cursor)).events == []
    # an old cursor reads the same again
    again = await read(backend, start.cursor, limit=100)
    assert [(e.type, e.job_id) for e in again.events] == seen
    started_c = next(e for e in again.events if e.job_id == c)
    assert (started_c.job_name, started_c.attempt, ts(started_c.at)) == ("c", 1, NOW + 1)
    assert a not in {e.job_id for e in again.events}


async def test_read_events_returns_after_its_timeout(backend: Backend) -> None:
    cursor = (await read(backend, None, limit=0)).cursor
    page, took = await elapsed(read(backend, cursor, timeout=0.3))
    assert page.events == []
    assert took < AT_ONCE


async def test_read_events_returns_the_first_event_without_waiting_out(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())
    cursor = (await read(backend, None, limit=0)).cursor
    reading = asyncio.create_task(elapsed(read(backend, cursor, timeout=30)))
    for _ in range(5):
        await asyncio.sleep(0)
    await claim_ids(backend, token="t")
    page, took = await asyncio.wait_for(reading, 60)
    assert [(e.type, e.job_id) for e in page.events] == [("started", job_id)]
    assert took < AT_ONCE


async def test_events_of_one_instance_reach_another(backend: Backend, store: Store) -> None:
    reader = await store.connected()  # like another process
    [job_id] = await enqueue(backend, new_job())
    cursor = (await read(reader, None, limit=0)).cursor
    await claim_ids(backend, token="t")
    page = await read(reader, cursor, timeout=10)
    assert [(e.type, e.job_id) for e in page.events] == [("started", job_id)]


# -- logs ---------------------------------------------------------------------------------


async def test_logs_are_kept_per_job_in_order(backend: Backend) -> None:
    a, b = await enqueue(backend, new_job(), new_job())
    assert await claim_ids(backend, token="t1") == [a, b]
    await backend.append_logs([])  # nothing to do
    await backend.append_logs(
        [
            LogEntry(a, "t1", NOW + 1, "info", "one", 1),
            LogEntry(b, "t1", NOW + 1, "warning", "other", 1),
            LogEntry(a, "t1", NOW + 2, "error", "two ünïcode", 1),
        ]
    )
    await finish(backend, a, "t1", state=JobState.QUEUED, run_at=NOW, event="retrying")
    assert await claim_ids(backend, token="t2") == [a]
    await backend.append_logs([LogEntry(a, "t2", NOW + 3, "debug", "three", 2)])
    logs = await backend.get_logs(a)
    assert all(isinstance(r, LogRecord) for r in logs)
    assert [(ts(r.at), r.level, r.message, r.attempt) for r in logs] == [
        (NOW + 1, "info", "one", 1),
        (NOW + 2, "error", "two ünïcode", 1),
        (NOW + 3, "debug", "three", 2),
    ]
    assert [r.message for r in await backend.get_logs(b)] == ["other"]
    assert await backend.get_logs(404_404) == []


async def test_logs_are_fenced_by_the_lease_token(backend: Backend) -> None:
    """A line is stored only while its job runs under the line's token: a stale worker
    (rescued, finished, removed) or a wrong token writes nothing, silently, and the
    lines of the rest of the batch are kept."""
    rescued, done, gone, queued = await enqueue(
        backend, new_job("r"), new_job("d"), new_job("g"), new_job("q")
    )
    assert await claim_ids(backend, token="old", include=("r", "d", "g")) == [rescued, done, gone]
    # the rescue of an expired lease puts `rescued` back, and a new claim runs it again
    await finish(
        backend,
        rescued,
        "old",
        state=JobState.QUEUED,
        run_at=NOW,
        event="stalled",
        expired_before=NOW + 3600,
    )
    assert await claim_ids(backend, token="new", include=("r",)) == [rescued]
    await finish(backend, done, "old", state=JobState.FAILED, error=error(), event="failed")
    await finish(backend, gone, "old", state=JobState.FAILED, error=error(), remove=True)
    await backend.append_logs(
        [
            LogEntry(rescued, "old", NOW + 1, "info", "stale attempt", 1),
            LogEntry(rescued, "new", NOW + 2, "info", "rescued run", 2),
            LogEntry(rescued, "forged", NOW + 3, "info", "wrong token", 2),
            LogEntry(done, "old", NOW + 4, "info", "after its end", 1),
            LogEntry(gone, "old", NOW + 5, "info", "after its removal", 1),
            LogEntry(queued, "old", NOW + 6, "info", "never claimed", 0),
            LogEntry(404_404, "old", NOW + 7, "info", "no such job", 1),
        ]
    )
    assert [r.message for r in await backend.get_logs(rescued)] == ["rescued run"]
    for job_id in (done, gone, queued, 404_404):
        assert await backend.get_logs(job_id) == []

"""The PostgreSQL backend against a real server: each protocol verb and its fencing."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import psycopg

from conveyor.backends.base import (
    CancelOutcome,
    CronFire,
    CronFireResult,
    CronPause,
    CronRecord,
    EnqueueParams,
    EventPage,
    EventRead,
    HeartbeatParams,
    JobFilter,
    LockParams,
    LogEntry,
    ProgressUpdate,
    PromoteParams,
    PromoteResult,
    PruneParams,
    RetryOutcome,
    RetryResult,
)
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.cursor import EventsCursor
from conveyor.models import JobState
from tests.integration.postgres.helpers import (
    NOW,
    claim_params,
    done,
    enqueue,
    new_job,
    read_events,
)


async def test_enqueue_claim_complete_round_trip(backend: PostgresBackend) -> None:
    payload = '{"b": 1, "a": [1.50, "ü\\u00e9"],  "n": null}'  # odd spacing kept verbatim
    [job_id] = await enqueue(
        backend,
        new_job(
            "send",
            payload=payload,
            tags=("x", "ü"),
            tenant="acme",
            group="g1",
            options='{"timeout": 5}',
            priority=-3,
            channel="emails",
        ),
    )
    claimed = await backend.claim(claim_params(token="t1"))
    assert [c.id for c in claimed] == [job_id]
    c = claimed[0]
    assert (c.name, c.payload, c.attempts, c.channel, c.priority) == (
        "send",
        payload,
        1,
        "emails",
        -3,
    )
    assert (c.tenant, c.group, c.tags, c.options, c.token) == (
        "acme",
        "g1",
        ("x", "ü"),
        '{"timeout": 5}',
        "t1",
    )
    assert c.run_at == NOW and c.created_at == NOW
    running = await backend.get_job(job_id)
    assert running is not None and running.state is JobState.RUNNING

    applied = await backend.complete_many([done(job_id, "t1", result='{"ok": true}')])
    assert applied == [True]
    job = await backend.get_job(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED and job.result == {"ok": True}
    assert job.progress == 100 and job.attempts == 1 and job.timeout == 5
    assert job.payload == json.loads(payload) and job.tags == ("x", "ü")
    assert job.finished_at is not None and job.started_at is not None
    assert [e.type for e in await backend.get_events(job_id)] == [
        "enqueued",
        "started",
        "completed",
    ]
    assert await backend.claim(claim_params()) == []


async def test_stale_token_changes_nothing(backend: PostgresBackend) -> None:
    [job_id] = await enqueue(backend, new_job())
    await backend.claim(claim_params(token="live"))
    stale = done(job_id, "stale", JobState.FAILED, error='{"type": "X"}')
    assert await backend.complete_many([stale]) == [False]
    assert await backend.set_progress(ProgressUpdate(job_id, "stale", 50, NOW)) is False
    beat = await backend.heartbeat(HeartbeatParams([(job_id, "stale")], NOW, NOW + 99))
    assert beat.lost == frozenset({job_id})
    job = await backend.get_job(job_id)
    assert job is not None and job.state is JobState.RUNNING and job.errors == ()
    assert [e.type for e in await backend.get_events(job_id)] == ["enqueued", "started"]
    # the stale outcome and the live one in the same batch: the live one applies
    both = [stale, done(job_id, "live")]
    assert await backend.complete_many(both) == [False, True]


async def test_rescue_is_fenced_by_lease_expiry(backend: PostgresBackend) -> None:
    [job_id] = await enqueue(backend, new_job(max_attempts=2))
    await backend.claim(claim_params(token="a", lease_expires_at=NOW + 10))
    assert await backend.expired_leases(NOW + 5, 10) == []
    [lease] = await backend.expired_leases(NOW + 10, 10)
    assert (lease.id, lease.token, lease.attempts, lease.max_attempts) == (job_id, "a", 1, 2)
    # the worker heartbeats before the rescue lands: the rescue must not apply
    beat = await backend.heartbeat(HeartbeatParams([(job_id, "a")], NOW + 10, NOW + 40))
    assert beat.lost == frozenset()
    rescue = done(
        job_id, "a", JobState.QUEUED, event="stalled", run_at=NOW + 10, expired_before=NOW + 10
    )
    assert await backend.complete_many([rescue]) == [False]
    late = done(job_id, "a", JobState.QUEUED, event="stalled", expired_before=NOW + 40)
    assert await backend.complete_many([late]) == [True]
    # the old worker comes back: its outcome is rejected, the rescue stands
    assert await backend.complete_many([done(job_id, "a")]) == [False]
    [again] = await backend.claim(claim_params(token="b", now=NOW + 41))
    assert again.attempts == 2


async def test_outcomes_errors_refund_requeue_and_remove(backend: PostgresBackend) -> None:
    ids = await enqueue(backend, *(new_job(f"j{i}", remove_on_complete=i == 3) for i in range(4)))
    await backend.claim(claim_params(token="t"))
    record = json.dumps({"attempt": 1, "type": "ValueError", "message": "bad\x00byte"})
    applied = await backend.complete_many(
        [
            done(ids[0], "t", JobState.SCHEDULED, event="retrying", run_at=NOW + 60, error=record),
            done(ids[1], "t", JobState.QUEUED, event="drained", run_at=NOW, refund_attempt=True),
            done(ids[2], "t", JobState.FAILED, error=record, event_data='{"why": 1}'),
            done(ids[3], "t", remove=True),
        ]
    )
    assert applied == [True, True, True, True]
    retrying, drained, failed = [await backend.get_job(i) for i in ids[:3]]
    assert retrying is not None and retrying.state is JobState.SCHEDULED
    assert retrying.run_at.timestamp() == NOW + 60 and retrying.finished_at is None
    assert retrying.last_error is not None and retrying.last_error["message"] == "bad\ufffdbyte"
    assert drained is not None and drained.state is JobState.QUEUED and drained.attempts == 0
    assert failed is not None and failed.state is JobState.FAILED and len(failed.errors) == 1
    assert (await backend.get_events(ids[2]))[-1].data == {"why": 1}
    assert await backend.get_job(ids[3]) is None
    # a removed job's events stay readable by the stream until pruned
    events, _ = await read_events(backend, "0", 100)
    assert ("completed", ids[3]) in [(e.type, e.job_id) for e in events]
    assert (await backend.prune(PruneParams(JobState.COMPLETED, NOW + 1, 100))).count == 0
    assert ids[3] not in [e.job_id for e in (await read_events(backend, "0", 100))[0]]


async def test_idempotency_keys_are_scoped_by_tenant(backend: PostgresBackend) -> None:
    first = await backend.enqueue_many(
        EnqueueParams(
            [
                new_job(idempotency_key="k"),
                new_job(idempotency_key="k", tenant="t1"),
                new_job(idempotency_key="k"),  # same key in the same batch
                new_job(),
            ],
            NOW,
        )
    )
    assert [r.created for r in first] == [True, True, False, True]
    assert first[0].id == first[2].id != first[1].id
    again = await backend.enqueue_many(
        EnqueueParams(
            [new_job(idempotency_key="k", tenant="t1"), new_job(idempotency_key="z")], NOW
        )
    )
    assert again[0].id == first[1].id and not again[0].created and again[1].created
    assert len(await backend.list_jobs(JobFilter())) == 4


async def test_priority_run_at_and_enqueue_order(backend: PostgresBackend) -> None:
    ids = await enqueue(
        backend,
        new_job("late", run_at=NOW - 1, priority=5),
        new_job("first", priority=-1),
        new_job("b", run_at=NOW - 5),
        new_job("c", run_at=NOW - 5),
        new_job("future", run_at=NOW + 5),
    )
    claimed = await backend.claim(claim_params(limit=10))
    assert [c.id for c in claimed] == [ids[1], ids[2], ids[3], ids[0]]


async def _claimed(backend: PostgresBackend, **kw: Any) -> list[int]:
    return [j.id for j in await backend.claim(claim_params(**kw))]


async def test_claim_filters_channels_names_and_pauses(backend: PostgresBackend) -> None:
    a, b, c, b2 = await enqueue(
        backend,
        new_job("x", channel="a"),
        new_job("y", channel="b"),
        new_job("z", channel="c"),
        new_job("y", channel="b"),
    )
    assert await backend.claim(claim_params(channels=())) == []
    assert await _claimed(backend, channels=("b",), limit=1) == [b]
    await backend.set_paused("a", True)
    # only "a" is paused: each claim variant (every channel, one, several) skips it alone
    assert await _claimed(backend, channels=("a",)) == []
    assert await _claimed(backend, channels=("a", "c"), exclude=("z",)) == []
    assert await _claimed(backend, include=("x", "y")) == [b2]
    await backend.set_paused(None, True)
    assert await _claimed(backend, include=("z",)) == []
    await backend.set_paused(None, False)  # resumes everything, "a"'s own pause included
    assert await _claimed(backend, channels=("a", "c")) == [a, c]


async def test_pausing_every_channel(backend: PostgresBackend) -> None:
    """The contract of ``set_paused(None, …)``: it covers channels that do not exist
    yet, outlasts resuming one channel, and resuming everything clears each channel's
    own pause too; ``"*"`` is just a channel."""
    await backend.set_paused(None, True)
    [new] = await enqueue(backend, new_job(channel="new"))  # a channel born paused
    assert await _claimed(backend) == []
    await backend.set_paused("new", False)  # every channel is still paused
    assert await _claimed(backend) == []
    assert await _claimed(backend, channels=("new",)) == []
    assert await _claimed(backend, channels=("new", "other")) == []
    await backend.set_paused("p", True)
    await backend.set_paused("q", True)
    await backend.set_paused("*", True)
    await backend.set_paused(None, True)  # twice: still one pause, undone by one resume
    p, q, star = await enqueue(
        backend, new_job(channel="p"), new_job(channel="q"), new_job(channel="*")
    )
    await backend.set_paused(None, False)
    assert await _claimed(backend) == [new, p, q, star]

    await backend.set_paused("*", True)  # one channel named "*", not every channel
    [star2, other] = await enqueue(backend, new_job(channel="*"), new_job(channel="other"))
    assert await _claimed(backend, channels=("*",)) == []
    assert await _claimed(backend) == [other]
    await backend.set_paused("*", False)
    assert await _claimed(backend, channels=("*",)) == [star2]


async def test_groups_one_at_a_time_and_later_members_do_not_block(
    backend: PostgresBackend,
) -> None:
    g1, g2, g3, free, later = await enqueue(
        backend,
        new_job(group="g"),
        new_job(group="g"),
        new_job(group="h"),
        new_job(),
        new_job(group="h", state=JobState.SCHEDULED, run_at=NOW + 100),
    )
    first = await backend.claim(claim_params(token="t", limit=10))
    assert sorted(j.id for j in first) == [g1, g3, free]  # one per group per batch
    assert await backend.claim(claim_params(token="u", limit=10)) == []
    assert await backend.complete_many([done(g1, "t")]) == [True]
    assert [j.id for j in await backend.claim(claim_params(token="u"))] == [g2]
    assert later not in [j.id for j in first]


async def test_promote_due_and_scheduled_jobs(backend: PostgresBackend) -> None:
    soon, later = await enqueue(
        backend,
        new_job(state=JobState.SCHEDULED, run_at=NOW + 0.5),
        new_job(state=JobState.SCHEDULED, run_at=NOW + 50),
    )
    assert await backend.claim(claim_params()) == []
    assert await backend.promote_due(PromoteParams(NOW, 1.0, 100)) == PromoteResult(1, NOW + 0.5)
    assert await backend.claim(claim_params(now=NOW + 0.4)) == []  # queued, not due yet
    assert [j.id for j in await backend.claim(claim_params(now=NOW + 0.5))] == [soon]
    assert await backend.promote_due(PromoteParams(NOW + 60, 0, 100)) == PromoteResult(1, None)
    assert later in [j.id for j in await backend.claim(claim_params(token="x", now=NOW + 60))]


async def test_cancel_retry_and_cancel_requests(backend: PostgresBackend) -> None:
    upcoming, running, other = await enqueue(
        backend, new_job("a", run_at=NOW + 9, state=JobState.SCHEDULED), new_job("b"), new_job("c")
    )
    await backend.claim(claim_params(token="t", include=("b",)))
    assert await backend.cancel(upcoming, NOW) is CancelOutcome.CANCELLED
    assert await backend.cancel(upcoming, NOW) is CancelOutcome.FINISHED
    assert await backend.cancel(running, NOW) is CancelOutcome.REQUESTED
    assert await backend.cancel(10**9, NOW) is CancelOutcome.MISSING
    assert await backend.cancel_requests([running, other]) == frozenset({running})
    beat = await backend.heartbeat(HeartbeatParams([(running, "t")], NOW, NOW + 30))
    assert beat.cancel_requested == frozenset({running})
    not_retryable = RetryResult(RetryOutcome.NOT_RETRYABLE, JobState.QUEUED)
    assert await backend.retry(other, NOW) == not_retryable
    assert await backend.retry(running, NOW) == RetryResult(
        RetryOutcome.NOT_RETRYABLE, JobState.RUNNING
    )
    assert await backend.retry(upcoming, NOW + 1) == RetryResult(RetryOutcome.RETRIED)
    assert await backend.retry(upcoming, NOW + 1) == not_retryable  # queued again now
    assert await backend.retry(10**9, NOW) == RetryResult(RetryOutcome.MISSING)
    job = await backend.get_job(upcoming)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    flt = JobFilter(name="c")
    assert await backend.cancel_jobs(flt, NOW) == 1
    assert (await backend.counts(None))["cancelled"] == 1


async def test_tags_filters(backend: PostgresBackend) -> None:
    a, b, c = await enqueue(
        backend, new_job(tags=("x", "y")), new_job(tags=("y",)), new_job(tags=())
    )

    async def ids(mode: str, *tags: str) -> list[int]:
        return [j.id for j in await backend.list_jobs(JobFilter(tags=tags, tag_mode=mode))]

    assert await ids("any", "x", "y") == [b, a]
    assert await ids("all", "x", "y") == [a]
    assert await ids("exact", "y") == [b]
    assert await ids("none", "x") == [c, b]
    assert [j.id for j in await backend.list_jobs(JobFilter(limit=1, before_id=c))] == [b]


async def test_logs_progress_counts_and_stats(backend: PostgresBackend) -> None:
    [job_id] = await enqueue(backend, new_job(channel="m"))
    await enqueue(backend, new_job(channel="n", run_at=NOW - 7))
    await backend.claim(claim_params(token="t", channels=("m",)))
    assert await backend.set_progress(ProgressUpdate(job_id, "t", 40, NOW))
    await backend.append_logs(
        [
            LogEntry(job_id, "t", NOW, "info", "one\x00", 1),
            LogEntry(job_id, "t", NOW, "warning", "two", 1),
        ]
    )
    assert [(r.level, r.message) for r in await backend.get_logs(job_id)] == [
        ("info", "one\ufffd"),
        ("warning", "two"),
    ]
    assert (await backend.get_events(job_id))[-1].data == {"progress": 40}
    assert (await backend.counts("m"))["running"] == 1
    assert (await backend.counts(None))["queued"] == 1
    stats = {s.channel: s for s in await backend.channel_stats()}
    assert stats["n"].oldest_queued_run_at == NOW - 7 and stats["m"].counts == {"running": 1}


async def test_prune_deletes_jobs_with_events_and_logs(backend: PostgresBackend) -> None:
    ids = await enqueue(backend, *(new_job() for _ in range(5)))
    await backend.claim(claim_params(token="t"))
    await backend.append_logs([LogEntry(ids[0], "t", NOW, "info", "x", 1)])
    await backend.complete_many([done(i, "t", at=NOW + n) for n, i in enumerate(ids)])
    assert (await backend.prune(PruneParams(JobState.FAILED, NOW + 100, 10))).count == 0
    assert (await backend.prune(PruneParams(JobState.COMPLETED, NOW + 2.5, 2))).count == 2
    assert (await backend.prune(PruneParams(JobState.COMPLETED, NOW + 2.5, 2))).count == 1
    assert await backend.get_job(ids[0]) is None and await backend.get_logs(ids[0]) == []
    assert await backend.get_events(ids[0]) == []
    assert await backend.get_job(ids[3]) is not None


async def test_locks_are_exclusive_until_their_ttl_passes(backend: PostgresBackend) -> None:
    async def take(owner: str, at: float, name: str = "prune", ttl: float = 10) -> bool:
        return await backend.acquire_lock(LockParams(name, owner, ttl, NOW + at))

    assert await take("a", 0)
    assert await take("a", 5)  # renewed: now held until NOW + 15
    assert not await take("b", 14)  # past the first lease, within the renewed one
    assert await take("other", 14, name="retention")  # another name: another lock
    assert await take("b", 15)  # expired: taken over
    assert not await take("a", 16)  # the old owner lost it, and cannot take it back
    assert not await take("a", 24.9)
    assert await take("b", 20, ttl=1)  # a renewal sets the TTL anew, shorter too
    assert await take("a", 21)


def _cron(name: str = "digest", next_run_at: float | None = NOW, **kw: Any) -> CronRecord:
    fields: dict[str, Any] = {
        "name": name,
        "expression": "0 6 * * *",
        "job": "order-digest",
        "payload": "{}",
        "timezone": "UTC",
        "paused": False,
        "allow_overlap": False,
        "catch_up": None,
        "options": None,
        "next_run_at": next_run_at,
    }
    fields.update(kw)
    return CronRecord(**fields)


async def test_cron_upsert_and_fire_compare_and_swap(backend: PostgresBackend) -> None:
    await backend.upsert_cron(_cron(next_run_at=NOW + 0.123456))
    [record] = await backend.list_cron()
    tick = record.next_run_at
    assert tick is not None and abs(tick - (NOW + 0.123456)) < 1e-6
    job = new_job("order-digest", idempotency_key=f"cron:digest:{tick!r}")
    fire = CronFire("digest", tick, NOW + 86400, tick, job, NOW)
    fired = await backend.fire_cron(fire)
    job_id = fired.job_id
    assert fired.won and job_id is not None
    assert (await backend.get_job(job_id)) is not None
    # the tick already moved on
    assert await backend.fire_cron(fire) == CronFireResult(won=False, job_id=None)
    [record] = await backend.list_cron()
    assert (record.next_run_at, record.last_run_at, record.last_job_id) == (
        NOW + 86400,
        tick,
        job_id,
    )
    await backend.upsert_cron(_cron(expression="0 7 * * *", next_run_at=NOW + 3600))
    [record] = await backend.list_cron()
    assert record.expression == "0 7 * * *" and record.last_job_id == job_id
    assert await backend.set_cron_paused(CronPause("digest", True, None))
    skip = CronFire("digest", NOW + 3600, NOW + 7200, NOW + 3600, None, NOW)
    assert await backend.fire_cron(skip) == CronFireResult(won=False, job_id=None)  # paused
    assert await backend.set_cron_paused(CronPause("digest", False, NOW + 3600))
    assert await backend.fire_cron(skip) == CronFireResult(won=True, job_id=None)
    [record] = await backend.list_cron()
    assert (record.paused, record.next_run_at, record.last_job_id) == (False, NOW + 7200, job_id)
    assert not await backend.set_cron_paused(CronPause("nope", True, None))
    assert await backend.delete_cron(["digest", "nope"]) == 1
    assert await backend.list_cron() == []


async def test_read_events_cursor(backend: PostgresBackend) -> None:
    assert await backend.read_events(EventRead(None, 0, 0)) == EventPage([], "0/0")
    ids = await enqueue(backend, new_job(), new_job())
    page = await backend.read_events(EventRead("0", 1, 0))
    assert [(e.type, e.job_id) for e in page.events] == [("enqueued", ids[0])]
    page = await backend.read_events(EventRead(page.cursor, 10, 0))
    assert [(e.type, e.job_id) for e in page.events] == [("enqueued", ids[1])]
    cursor = page.cursor
    assert await backend.read_events(EventRead(cursor, 10, 0.05)) == EventPage([], cursor)
    # limit 0: just the cursor, at once (nothing could come, so nothing is waited for)
    await enqueue(backend, new_job("paged"))
    start = time.monotonic()
    assert await backend.read_events(EventRead(cursor, 0, 5)) == EventPage([], cursor)
    assert time.monotonic() - start < 1
    # at most limit in all: here one enqueued and three stored events are due
    [job] = await backend.claim(claim_params(token="t", include=("paged",)))
    await backend.set_progress(ProgressUpdate(job.id, "t", 50, NOW))
    await backend.complete_many([done(job.id, "t")])
    page = await backend.read_events(EventRead(cursor, 2, 0))
    assert [e.type for e in page.events] == ["enqueued", "started"]
    page = await backend.read_events(EventRead(page.cursor, 2, 0))
    assert [e.type for e in page.events] == ["progress", "completed"]


async def test_read_events_waits_for_a_commit_in_flight(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    """An id taken by an open transaction holds the cursor back until it commits, so the
    event is not skipped by a reader that saw a later id first."""
    _, head = await read_events(backend, None, 0)
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as tx:
        [slow] = await backend.enqueue_many(EnqueueParams([new_job("slow")], NOW, tx))
        [fast] = await enqueue(backend, new_job("fast"))
        events, cursor = await read_events(backend, head, 10, 0.3)
        assert events == [] and EventsCursor.decode(cursor).jobs.horizon is not None
        await tx.commit()
    events, _ = await read_events(backend, cursor, 10, 1)
    assert [e.job_id for e in events] == [slow.id, fast]


async def test_read_events_passes_a_rolled_back_id_at_once(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    _, head = await read_events(backend, None, 0)
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as tx:
        await backend.enqueue_many(EnqueueParams([new_job("gone")], NOW, tx))
        [kept] = await enqueue(backend, new_job("kept"))
        await tx.rollback()
    start = time.monotonic()
    events, cursor = await read_events(backend, head, 10, 3)
    assert [e.job_id for e in events] == [kept]
    assert time.monotonic() - start < 2  # not the GAP_GRACE fallback
    assert ":" not in cursor  # no gap pending


async def test_migration_sql_is_the_schema(backend: PostgresBackend) -> None:
    text = backend.migration_sql()
    assert "CREATE TABLE" in text and backend.schema in text and "schema_migrations" in text


async def test_the_pool_hands_out_the_connection_returned_last(backend: PostgresBackend) -> None:
    """After a burst opened several connections, calls one at a time keep landing on the
    one warm server process (LIFO) instead of round-robin over all of them, and the
    connection idle longest is the one left for the pool to close."""
    pool = backend._pool
    assert pool is not None

    async def pid(hold: float = 0.0) -> int:
        async with backend._connection() as conn:
            cur = await conn.execute("SELECT pg_backend_pid(), pg_sleep(%s)", (hold,))
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

    burst = await asyncio.gather(*(pid(0.2) for _ in range(4)))
    assert len(set(burst)) == 4, burst  # the burst grew the pool to four connections
    serial = [await pid() for _ in range(8)]
    assert len(set(serial)) == 1, serial
    assert serial[0] in burst
    idle = list(pool._pool)  # the oldest-returned idle connection is at the left end
    assert idle[-1].info.backend_pid == serial[0]

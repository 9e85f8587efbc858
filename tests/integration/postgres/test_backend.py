"""The PostgreSQL backend against a real server: each protocol verb and its fencing."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg

from conveyor.backends.base import (
    CancelOutcome,
    CronFire,
    CronRecord,
    EnqueueParams,
    HeartbeatParams,
    JobFilter,
    LogEntry,
    RetryOutcome,
)
from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.cursor import EventsCursor
from conveyor.models import JobState
from tests.integration.postgres.helpers import NOW, claim_params, done, enqueue, new_job


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
    assert await backend.set_progress(job_id, "stale", 50, NOW) is False
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
    events, _ = await backend.read_events("0", 100, 0)
    assert ("completed", ids[3]) in [(e.type, e.job_id) for e in events]
    assert await backend.prune(JobState.COMPLETED, NOW + 1, 100) == 0
    assert ids[3] not in [e.job_id for e in (await backend.read_events("0", 100, 0))[0]]


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


async def test_claim_filters_channels_names_and_pauses(backend: PostgresBackend) -> None:
    a, b, c = await enqueue(
        backend, new_job("x", channel="a"), new_job("y", channel="b"), new_job("z", channel="c")
    )
    assert await backend.claim(claim_params(channels=())) == []
    assert [j.id for j in await backend.claim(claim_params(channels=("b",)))] == [b]
    await backend.set_paused("a", True)
    assert await backend.paused_channels() == frozenset({"a"})
    assert [
        j.id for j in await backend.claim(claim_params(channels=("a", "c"), exclude=("z",)))
    ] == []
    await backend.set_paused(None, True)
    assert await backend.claim(claim_params(include=("z",))) == []
    await backend.set_paused(None, False)
    assert await backend.paused_channels() == frozenset()
    assert [j.id for j in await backend.claim(claim_params(channels=("a", "c")))] == [a, c]


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
    assert await backend.promote_due(NOW, 1.0, 100) == (1, NOW + 0.5)
    assert await backend.claim(claim_params(now=NOW + 0.4)) == []  # queued, not due yet
    assert [j.id for j in await backend.claim(claim_params(now=NOW + 0.5))] == [soon]
    assert await backend.promote_due(NOW + 60, 0, 100) == (1, None)
    assert later in [j.id for j in await backend.claim(claim_params(token="x", now=NOW + 60))]


async def test_cancel_retry_and_cancel_requests(backend: PostgresBackend) -> None:
    upcoming, running, other = await enqueue(
        backend, new_job("a", run_at=NOW + 9, state=JobState.SCHEDULED), new_job("b"), new_job("c")
    )
    await backend.claim(claim_params(token="t", include=("b",)))
    assert await backend.cancel(upcoming, NOW) == CancelOutcome.CANCELLED
    assert await backend.cancel(upcoming, NOW) == CancelOutcome.FINISHED
    assert await backend.cancel(running, NOW) == CancelOutcome.REQUESTED
    assert await backend.cancel(10**9, NOW) == CancelOutcome.MISSING
    assert await backend.cancel_requests([running, other]) == frozenset({running})
    beat = await backend.heartbeat(HeartbeatParams([(running, "t")], NOW, NOW + 30))
    assert beat.cancel_requested == frozenset({running})
    assert await backend.retry(other, NOW) == "queued"
    assert await backend.retry(upcoming, NOW + 1) == RetryOutcome.OK
    assert await backend.retry(10**9, NOW) == RetryOutcome.MISSING
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
    assert await backend.set_progress(job_id, "t", 40, NOW)
    await backend.append_logs(
        [LogEntry(job_id, NOW, "info", "one\x00", 1), LogEntry(job_id, NOW, "warning", "two", 1)]
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
    await backend.append_logs([LogEntry(ids[0], NOW, "info", "x", 1)])
    await backend.complete_many([done(i, "t", at=NOW + n) for n, i in enumerate(ids)])
    assert await backend.prune(JobState.FAILED, NOW + 100, 10) == 0
    assert await backend.prune(JobState.COMPLETED, NOW + 2.5, 2) == 2
    assert await backend.prune(JobState.COMPLETED, NOW + 2.5, 2) == 1
    assert await backend.get_job(ids[0]) is None and await backend.get_logs(ids[0]) == []
    assert await backend.get_events(ids[0]) == []
    assert await backend.get_job(ids[3]) is not None


async def test_locks(backend: PostgresBackend) -> None:
    assert await backend.acquire_lock("prune", "a", 10, NOW)
    assert await backend.acquire_lock("prune", "a", 10, NOW + 5)  # renew
    assert not await backend.acquire_lock("prune", "b", 10, NOW + 14)
    assert await backend.acquire_lock("prune", "b", 10, NOW + 15)  # expired: taken over
    await backend.release_lock("prune", "a")  # not the owner: nothing happens
    assert not await backend.acquire_lock("prune", "a", 10, NOW + 16)
    await backend.release_lock("prune", "b")
    assert await backend.acquire_lock("prune", "a", 10, NOW + 16)


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
    won, job_id = await backend.fire_cron(fire)
    assert won and job_id is not None
    assert await backend.fire_cron(fire) == (False, None)  # the tick already moved on
    [record] = await backend.list_cron()
    assert (record.next_run_at, record.last_run_at, record.last_job_id) == (
        NOW + 86400,
        tick,
        job_id,
    )
    await backend.upsert_cron(_cron(expression="0 7 * * *", next_run_at=NOW + 3600))
    [record] = await backend.list_cron()
    assert record.expression == "0 7 * * *" and record.last_job_id == job_id
    assert await backend.set_cron_paused("digest", True, None)
    skip = CronFire("digest", NOW + 3600, NOW + 7200, NOW + 3600, None, NOW)
    assert await backend.fire_cron(skip) == (False, None)  # paused
    assert await backend.set_cron_paused("digest", False, NOW + 3600)
    assert await backend.fire_cron(skip) == (True, None)
    assert not await backend.set_cron_paused("nope", True, None)
    assert await backend.delete_cron(["digest", "nope"]) == 1
    assert await backend.list_cron() == []


async def test_read_events_cursor(backend: PostgresBackend) -> None:
    assert await backend.read_events(None, 0, 0) == ([], "0/0")
    ids = await enqueue(backend, new_job(), new_job())
    events, cursor = await backend.read_events("0", 1, 0)
    assert [(e.type, e.job_id) for e in events] == [("enqueued", ids[0])]
    events, cursor = await backend.read_events(cursor, 10, 0)
    assert [(e.type, e.job_id) for e in events] == [("enqueued", ids[1])]
    assert await backend.read_events(cursor, 10, 0.05) == ([], cursor)


async def test_read_events_waits_for_a_commit_in_flight(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    """An id taken by an open transaction holds the cursor back until it commits, so the
    event is not skipped by a reader that saw a later id first."""
    _, head = await backend.read_events(None, 0, 0)
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as tx:
        [slow] = await backend.enqueue_many(EnqueueParams([new_job("slow")], NOW, tx))
        [fast] = await enqueue(backend, new_job("fast"))
        events, cursor = await backend.read_events(head, 10, 0.3)
        assert events == [] and EventsCursor.decode(cursor).jobs.horizon is not None
        await tx.commit()
    events, _ = await backend.read_events(cursor, 10, 1)
    assert [e.job_id for e in events] == [slow.id, fast]


async def test_read_events_passes_a_rolled_back_id_at_once(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any]
) -> None:
    _, head = await backend.read_events(None, 0, 0)
    async with await psycopg.AsyncConnection.connect(admin.info.dsn) as tx:
        await backend.enqueue_many(EnqueueParams([new_job("gone")], NOW, tx))
        [kept] = await enqueue(backend, new_job("kept"))
        await tx.rollback()
    start = time.monotonic()
    events, cursor = await backend.read_events(head, 10, 3)
    assert [e.job_id for e in events] == [kept]
    assert time.monotonic() - start < 2  # not the GAP_GRACE fallback
    assert ":" not in cursor  # no gap pending


async def test_migration_sql_is_the_schema(backend: PostgresBackend) -> None:
    text = backend.migration_sql()
    assert "CREATE TABLE" in text and backend.schema in text and "schema_migrations" in text

"""The Redis backend against a real Redis: every protocol method, backend-level."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.backends.base import (
    CancelOutcome,
    CronFire,
    CronRecord,
    EnqueueParams,
    HeartbeatParams,
    JobFilter,
    LogEntry,
    Outcome,
    RetryOutcome,
)
from conveyor.backends.redis.backend import RedisBackend
from conveyor.backends.redis.keys import order_key
from conveyor.errors import UnsupportedError
from conveyor.models import JobState
from tests.integration.redis.helpers import NOW, claim_params, enqueue, new_job


def done(
    job_id: int, token: str = "tok", state: JobState = JobState.COMPLETED, **kw: Any
) -> Outcome:
    return Outcome(job_id=job_id, token=token, state=state, at=NOW + 1, event=str(state), **kw)


async def claim_ids(backend: RedisBackend, **kw: Any) -> list[int]:
    return [j.id for j in await backend.claim(claim_params(**kw))]


async def test_enqueued_event_is_the_hash_unless_the_job_is_removable(
    backend: RedisBackend,
) -> None:
    plain, removable = await enqueue(
        backend,
        new_job("send", tenant="acme"),
        new_job("send", tenant="acme", remove_on_complete=True),
    )
    client, keys = backend._require(), backend._keys
    # one key less per job: only the removable job (whose events outlive it) stores it
    assert await client.exists(keys.events(plain)) == 0
    assert await client.exists(keys.events(removable)) == 1
    for job_id in (plain, removable):
        [event] = await backend.get_events(job_id)
        assert (event.type, event.job_id, event.job_name, event.tenant, event.attempt) == (
            "enqueued",
            job_id,
            "send",
            "acme",
            0,
        )
        assert event.at.timestamp() == NOW
    claimed = await backend.claim(claim_params(token="t", limit=2))
    assert sorted(j.id for j in claimed) == [plain, removable]
    await backend.complete_many([done(plain, "t"), done(removable, "t", remove=True)])
    assert await backend.get_job(removable) is None
    for job_id in (plain, removable):
        types = [e.type for e in await backend.get_events(job_id)]
        assert types[:3] == ["enqueued", "started", "completed"]
        assert types.count("enqueued") == 1


# -- encoding -------------------------------------------------------------------------------


@given(st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_order_key_sorts_like_the_float(a: float, b: float) -> None:
    if a == b:  # 0.0 == -0.0: either order is fine
        return
    assert (order_key(a) < order_key(b)) == (a < b)
    assert len(order_key(a)) == 16


# -- the hot path ---------------------------------------------------------------------------


async def test_round_trip(backend: RedisBackend) -> None:
    [job_id] = await enqueue(
        backend, new_job("send", tags=("a", "é"), tenant="acme", options='{"timeout": 5}')
    )
    job = await backend.get_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.tags == ("a", "é")
    assert job.timeout == 5 and job.tenant == "acme" and job.attempts == 0

    [claimed] = await backend.claim(claim_params(token="t1"))
    assert (claimed.id, claimed.name, claimed.payload, claimed.attempts) == (
        job_id,
        "send",
        '{"n": 1}',
        1,
    )
    assert (claimed.token, claimed.tenant, claimed.tags, claimed.run_at) == (
        "t1",
        "acme",
        ("a", "é"),
        NOW,
    )
    assert (
        claimed.created_at == NOW and claimed.max_attempts == 3 and not claimed.remove_on_complete
    )
    assert (await backend.counts(None))["running"] == 1

    assert await backend.complete_many([done(job_id, "t1", result='{"ok": true}')]) == [True]
    job = await backend.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == {"ok": True}
    assert (
        job.progress == 100
        and job.finished_at is not None
        and job.finished_at.timestamp() == NOW + 1
    )
    assert [e.type for e in await backend.get_events(job_id)] == [
        "enqueued",
        "started",
        "completed",
    ]
    assert all(
        e.tenant == "acme" and e.job_name == "send" for e in await backend.get_events(job_id)
    )
    counts = await backend.counts(None)
    assert counts == {**dict.fromkeys(counts, 0), "completed": 1}
    assert await backend.counts("default") == counts
    assert (await backend.counts("other"))["completed"] == 0


async def test_claim_order_is_priority_then_run_at_then_id(backend: RedisBackend) -> None:
    tiny = math.nextafter(NOW - 10, 0)  # one ulp earlier: sub-microsecond differences count
    specs = [
        ("p0-late", 0, NOW - 1),
        ("p0-early", 0, NOW - 10),
        ("p0-earlier-by-an-ulp", 0, tiny),
        ("p-max", 32767, NOW - 100),
        ("p-min", -32768, NOW),
        ("p0-early-second", 0, NOW - 10),
        ("p5", 5, NOW - 50),
    ]
    await enqueue(backend, *(new_job(n, priority=p, run_at=r) for n, p, r in specs))
    order = [j.name for j in await backend.claim(claim_params(limit=3))]
    order += [j.name for j in await backend.claim(claim_params(limit=10))]
    assert order == [
        "p-min", "p0-earlier-by-an-ulp", "p0-early", "p0-early-second", "p0-late", "p5", "p-max",
    ]  # fmt: skip


async def test_claim_limit_and_future_queued_jobs(backend: RedisBackend) -> None:
    ids = await enqueue(backend, *(new_job(run_at=NOW) for _ in range(5)))
    # promote_due's look-ahead makes jobs queued shortly before they are due
    [ahead] = await enqueue(backend, new_job("ahead", run_at=NOW + 0.5, priority=-5))
    assert await claim_ids(backend, limit=2) == ids[:2]
    assert await claim_ids(backend, limit=10) == ids[2:]
    assert await claim_ids(backend, limit=10) == []
    assert await claim_ids(backend, limit=10, now=NOW + 0.5) == [ahead]


async def test_due_scheduled_jobs_start_at_once_and_promote_due(backend: RedisBackend) -> None:
    a, b, c = await enqueue(
        backend,
        new_job("a", state=JobState.SCHEDULED, run_at=NOW + 10),
        new_job("b", state=JobState.SCHEDULED, run_at=NOW + 20),
        new_job("c", state=JobState.SCHEDULED, run_at=NOW + 30),
    )
    assert await claim_ids(backend) == []
    assert await claim_ids(backend, now=NOW + 10) == [a]  # promoted inside the claim
    assert await backend.promote_due(NOW + 15, 10.0, 100) == (1, NOW + 20)
    job = await backend.get_job(b)
    assert job is not None and job.state is JobState.QUEUED
    assert await claim_ids(backend, now=NOW + 15) == []  # queued early, not due yet
    assert await claim_ids(backend, now=NOW + 20) == [b]
    assert await backend.promote_due(NOW + 40, 0.0, 100) == (1, None)
    assert await claim_ids(backend, now=NOW + 40) == [c]
    # promoted and claimed in one script: every index ends up consistent
    [d] = await enqueue(backend, new_job("d", state=JobState.SCHEDULED, run_at=NOW + 50))
    assert await claim_ids(backend, now=NOW + 50) == [d]
    assert await backend.list_jobs(JobFilter(state=JobState.QUEUED)) == []
    assert await backend.list_jobs(JobFilter(state=JobState.SCHEDULED)) == []
    counts = await backend.counts(None)
    assert (counts["running"], counts["queued"], counts["scheduled"]) == (4, 0, 0)
    assert await backend.counts("default") == counts
    [stats] = await backend.channel_stats()
    assert stats.oldest_queued_run_at is None and stats.counts == {"running": 4}


async def test_fencing_rejects_stale_tokens(backend: RedisBackend) -> None:
    [job_id] = await enqueue(backend, new_job())
    [first] = await backend.claim(claim_params(token="old", now=NOW))
    lease = NOW + 30
    assert await backend.complete_many([done(job_id, "wrong")]) == [False]
    # a rescue applies only once the lease has expired
    rescue = done(job_id, "old", JobState.QUEUED, run_at=NOW + 31, expired_before=NOW + 29)
    assert await backend.complete_many([rescue]) == [False]
    hb = await backend.heartbeat(HeartbeatParams([(job_id, "wrong")], NOW, NOW + 60))
    assert hb.lost == {job_id}
    expired = await backend.expired_leases(lease, 10)
    assert [(e.id, e.token, e.attempts) for e in expired] == [(job_id, "old", 1)]
    rescue = done(job_id, "old", JobState.QUEUED, run_at=lease, expired_before=lease)
    assert await backend.complete_many([rescue]) == [True]
    [second] = await backend.claim(claim_params(token="new", now=lease))
    assert second.attempts == 2
    # the first worker comes back: everything it does is rejected
    assert await backend.complete_many([done(job_id, "old")]) == [False]
    assert not await backend.set_progress(job_id, "old", 50, NOW)
    hb = await backend.heartbeat(HeartbeatParams([(job_id, "old")], NOW, NOW + 60))
    assert hb.lost == {job_id}
    job = await backend.get_job(job_id)
    assert job is not None and job.state is JobState.RUNNING and job.progress == 0
    assert await backend.set_progress(job_id, "new", 50, NOW)
    assert await backend.complete_many([done(job_id, "new")]) == [True]
    assert first.id == second.id


async def test_complete_many_applies_each_outcome(backend: RedisBackend) -> None:
    ids = await enqueue(backend, *(new_job(f"j{i}", idempotency_key=f"k{i}") for i in range(5)))
    await backend.claim(claim_params(limit=5))
    err = json.dumps({"attempt": 1, "type": "ValueError", "message": "boom", "traceback": "tb"})
    results = await backend.complete_many(
        [
            done(ids[0], state=JobState.FAILED, error=err, event_data='{"final": true}'),
            done(ids[1], state=JobState.SCHEDULED, run_at=NOW + 60, error=err),
            done(ids[2], state=JobState.QUEUED, run_at=NOW, refund_attempt=True),
            done(ids[3], remove=True),
            done(999, state=JobState.FAILED),
            done(ids[4], state=JobState.CANCELLED),
        ]
    )
    assert results == [True, True, True, True, False, True]
    failed, scheduled, requeued = [await backend.get_job(i) for i in ids[:3]]
    assert (
        failed is not None
        and failed.state is JobState.FAILED
        and failed.last_error == json.loads(err)
    )
    assert scheduled is not None and scheduled.state is JobState.SCHEDULED
    assert scheduled.run_at.timestamp() == NOW + 60 and len(scheduled.errors) == 1
    assert requeued is not None and requeued.state is JobState.QUEUED and requeued.attempts == 0
    assert await backend.get_job(ids[3]) is None
    assert [e.type for e in await backend.get_events(ids[3])][-1] == "completed"
    assert (await backend.get_events(ids[0]))[-1].data == {"final": True}
    # the removed job's idempotency key is free again
    [again] = await enqueue(backend, new_job(idempotency_key="k3"))
    assert again != ids[3]
    counts = await backend.counts(None)
    assert (counts["failed"], counts["scheduled"], counts["queued"], counts["cancelled"]) == (
        1,
        1,
        2,
        1,
    )
    assert counts["running"] == counts["completed"] == 0
    # errors accumulate, one per attempt
    assert await claim_ids(backend, now=NOW + 60, limit=10) == [ids[2], again, ids[1]]
    assert await backend.complete_many([done(ids[1], state=JobState.FAILED, error=err)]) == [True]
    job = await backend.get_job(ids[1])
    assert job is not None and len(job.errors) == 2


async def test_groups_run_one_at_a_time(backend: RedisBackend) -> None:
    g1, g2, other, g3 = await enqueue(
        backend,
        new_job("g1", group="g"),
        new_job("g2", group="g"),
        new_job("other"),
        new_job("g3", group="g", priority=-1),
    )
    assert await claim_ids(backend, token="a") == [g3, other]  # one per group in a batch
    assert await claim_ids(backend, token="b") == []  # the group is busy
    assert await backend.complete_many([done(g3, "a")]) == [True]
    assert await claim_ids(backend, token="c") == [g1]
    # a rescued lease frees the group too
    rescue = done(g1, "c", JobState.FAILED, expired_before=NOW + 30)
    assert await backend.complete_many([rescue]) == [True]
    assert await claim_ids(backend, token="d") == [g2]


async def test_group_member_scheduled_later_does_not_block(backend: RedisBackend) -> None:
    later, due = await enqueue(
        backend,
        new_job("later", group="g", state=JobState.SCHEDULED, run_at=NOW + 100),
        new_job("due", group="g"),
    )
    assert await claim_ids(backend) == [due]
    assert await backend.complete_many([done(due)]) == [True]
    assert await claim_ids(backend, now=NOW + 100) == [later]


async def test_group_queue_survives_cancel_and_requeue(backend: RedisBackend) -> None:
    a, b, c = await enqueue(backend, *(new_job(n, group="g") for n in "abc"))
    assert await backend.cancel(a, NOW) == CancelOutcome.CANCELLED  # the group's head
    assert await claim_ids(backend, token="x") == [b]
    # a drained requeue puts b back in front of c
    requeue = done(b, "x", JobState.QUEUED, refund_attempt=True)
    assert await backend.complete_many([requeue]) == [True]
    assert await claim_ids(backend, token="y") == [b]
    assert await backend.complete_many([done(b, "y")]) == [True]
    assert await claim_ids(backend, token="z") == [c]


async def test_channels_pause_include_exclude(backend: RedisBackend) -> None:
    mail, sms, report = await enqueue(
        backend,
        new_job("mail", channel="emails"),
        new_job("sms", channel="texts"),
        new_job("report", channel="emails"),
    )
    await backend.set_paused(None, True)
    assert await claim_ids(backend) == []
    assert await backend.paused_channels() == {"*"}
    await backend.set_paused(None, False)
    await backend.set_paused("emails", True)
    assert await backend.paused_channels() == {"emails"}
    assert await claim_ids(backend, token="a", channels=("emails",)) == []
    assert await claim_ids(backend, token="a") == [sms]
    await backend.set_paused("emails", False)
    assert await claim_ids(backend, token="b", exclude=("mail",)) == [report]
    assert await claim_ids(backend, token="c", include=("sms", "report")) == []
    assert await claim_ids(backend, token="d", channels=("texts",)) == []
    assert await claim_ids(backend, token="e", channels=("emails", "texts"), include=("mail",)) == [
        mail
    ]
    await backend.set_paused("texts", True)
    await backend.set_paused(None, True)
    await backend.set_paused(None, False)  # resuming everything lifts every pause
    assert await backend.paused_channels() == frozenset()
    # a channel named "*" is just a channel
    [star] = await enqueue(backend, new_job("star", channel="*"))
    [plain] = await enqueue(backend, new_job("plain", channel="plain"))
    await backend.set_paused("*", True)
    assert await claim_ids(backend, token="f") == [plain]
    await backend.set_paused("*", False)
    assert await claim_ids(backend, token="g") == [star]


async def test_idempotency_keys_are_scoped_by_tenant(backend: RedisBackend) -> None:
    results = await backend.enqueue_many(
        EnqueueParams(
            jobs=[
                new_job(idempotency_key="k"),
                new_job(idempotency_key="k"),
                new_job(idempotency_key="k", tenant="acme"),
                new_job(idempotency_key="k", tenant="other"),
            ],
            now=NOW,
        )
    )
    assert [r.created for r in results] == [True, False, True, True]
    assert results[0].id == results[1].id
    assert len({results[0].id, results[2].id, results[3].id}) == 3
    again = await backend.enqueue_many(
        EnqueueParams([new_job(idempotency_key="k", tenant="acme")], NOW)
    )
    assert (again[0].id, again[0].created) == (results[2].id, False)
    # cleaned: the key is free again
    await backend.claim(claim_params(limit=10))
    await backend.complete_many([done(r.id) for r in results if r.created])
    assert await backend.prune(JobState.COMPLETED, NOW + 2, 100) == 3
    fresh = await backend.enqueue_many(EnqueueParams([new_job(idempotency_key="k")], NOW))
    assert fresh[0].created and fresh[0].id not in {r.id for r in results}


async def test_transactional_enqueue_is_refused(backend: RedisBackend) -> None:
    params = EnqueueParams([new_job()], NOW, connection=object())
    with pytest.raises(UnsupportedError, match="Redis cannot enqueue inside your transaction"):
        await backend.enqueue_many(params)
    with pytest.raises(UnsupportedError):
        backend.enqueue_many_sync(params)
    with pytest.raises(UnsupportedError):
        backend.enqueue_many_sync(EnqueueParams([new_job()], NOW))
    assert (await backend.counts(None))["queued"] == 0


async def test_names_and_tags_are_data(backend: RedisBackend) -> None:
    nasty = "x\"]]) redis.call('FLUSHALL') --[[ {tag} ü 💥 :ready:"
    [job_id] = await enqueue(
        backend, new_job(nasty, channel=nasty, tags=(nasty, "ok"), group=nasty, tenant=nasty)
    )
    [claimed] = await backend.claim(claim_params(channels=(nasty,), include=(nasty,)))
    assert (claimed.name, claimed.channel, claimed.group, claimed.tenant) == (nasty,) * 4
    assert claimed.tags == (nasty, "ok")
    found = await backend.list_jobs(
        JobFilter(name=nasty, tags=(nasty,), tag_mode="all", tenant=nasty)
    )
    assert [j.id for j in found] == [job_id]
    assert (await backend.counts(nasty))["running"] == 1


# -- inspection and management ---------------------------------------------------------------


async def test_list_jobs_filters_and_pages(backend: RedisBackend) -> None:
    ids = await enqueue(
        backend,
        new_job("a", tags=("x", "y")),
        new_job("b", tags=("x",), channel="c2"),
        new_job("a", tags=("y",), tenant="t"),
        new_job("c"),
    )

    async def listed(**kw: Any) -> list[int]:
        return [j.id for j in await backend.list_jobs(JobFilter(**kw))]

    assert await listed() == ids[::-1]
    assert await listed(limit=2) == [ids[3], ids[2]]
    assert await listed(before_id=ids[2], limit=10) == [ids[1], ids[0]]
    assert await listed(name="a") == [ids[2], ids[0]]
    assert await listed(channel="c2") == [ids[1]]
    assert await listed(tenant="t") == [ids[2]]
    assert await listed(tags=("x", "y"), tag_mode="any") == [ids[2], ids[1], ids[0]]
    assert await listed(tags=("x", "y"), tag_mode="all") == [ids[0]]
    assert await listed(tags=("x",), tag_mode="exact") == [ids[1]]
    assert await listed(tags=("x",), tag_mode="none") == [ids[3], ids[2]]
    await backend.claim(claim_params(limit=1))
    assert await listed(state=JobState.RUNNING) == [ids[0]]
    assert await listed(state=JobState.QUEUED, name="a") == [ids[2]]


async def test_channel_stats(backend: RedisBackend) -> None:
    assert await backend.channel_stats() == []
    await enqueue(
        backend,
        new_job(channel="b", run_at=NOW - 5, priority=9),
        new_job(channel="b", run_at=NOW - 1, priority=-9),
        new_job(channel="b", run_at=NOW - 7, group="g"),
        new_job(channel="b", run_at=NOW - 8, group="g"),  # waits behind its group's head
        new_job(channel="a", state=JobState.SCHEDULED, run_at=NOW + 5),
    )
    await backend.claim(claim_params(limit=1, channels=("b",)))
    a, b = await backend.channel_stats()
    assert (a.channel, a.counts, a.oldest_queued_run_at) == ("a", {"scheduled": 1}, None)
    assert (b.channel, b.counts) == ("b", {"queued": 3, "running": 1})
    assert b.oldest_queued_run_at == NOW - 8


async def test_cancel_and_cancel_jobs(backend: RedisBackend) -> None:
    running, queued, scheduled, tagged = await enqueue(
        backend,
        new_job("r"),
        new_job("q", priority=1),
        new_job("s", state=JobState.SCHEDULED, run_at=NOW + 60, tags=("t",)),
        new_job("t", priority=1, tags=("t",)),
    )
    await backend.claim(claim_params(limit=1))
    assert await backend.cancel(running, NOW) == CancelOutcome.REQUESTED
    assert await backend.cancel_requests([running, queued]) == {running}
    hb = await backend.heartbeat(HeartbeatParams([(running, "tok")], NOW, NOW + 30))
    assert hb.cancel_requested == {running} and not hb.lost
    assert await backend.cancel(queued, NOW) == CancelOutcome.CANCELLED
    assert await backend.cancel(queued, NOW) == CancelOutcome.FINISHED
    assert await backend.cancel(12345, NOW) == CancelOutcome.MISSING
    assert await backend.cancel_jobs(JobFilter(tags=("t",), tag_mode="any"), NOW) == 2
    assert await backend.cancel_jobs(JobFilter(), NOW) == 0  # running jobs are not upcoming
    for job_id in (scheduled, tagged):
        job = await backend.get_job(job_id)
        assert job is not None and job.state is JobState.CANCELLED
    assert await claim_ids(backend, now=NOW + 60) == []
    assert (await backend.counts(None))["cancelled"] == 3


async def test_cancel_jobs_covers_large_batches(backend: RedisBackend) -> None:
    await enqueue(backend, *(new_job(tags=("bulk",)) for _ in range(1200)))
    await enqueue(backend, new_job(tags=("keep",)))
    assert await backend.cancel_jobs(JobFilter(tags=("bulk",)), NOW) == 1200
    assert (await backend.counts(None))["queued"] == 1


async def test_retry(backend: RedisBackend) -> None:
    [job_id] = await enqueue(backend, new_job())
    assert await backend.retry(job_id, NOW) == "queued"
    await backend.claim(claim_params())
    assert await backend.retry(job_id, NOW) == "running"
    err = json.dumps({"attempt": 1, "type": "E", "message": "m"})
    await backend.complete_many([done(job_id, state=JobState.FAILED, error=err)])
    assert await backend.retry(job_id, NOW + 5) == RetryOutcome.OK
    job = await backend.get_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    assert len(job.errors) == 1 and job.finished_at is None and job.run_at.timestamp() == NOW + 5
    assert await claim_ids(backend, now=NOW + 5) == [job_id]
    assert await backend.retry(424242, NOW) == RetryOutcome.MISSING


async def test_prune_deletes_jobs_with_events_and_logs(backend: RedisBackend) -> None:
    old, new = await enqueue(backend, new_job("old"), new_job("new"))
    await backend.claim(claim_params(limit=2))
    await backend.append_logs([LogEntry(old, NOW, "INFO", "hello", 1)])
    await backend.complete_many([done(old)])
    await backend.complete_many(
        [
            Outcome(
                job_id=new, token="tok", state=JobState.COMPLETED, at=NOW + 100, event="completed"
            )
        ]
    )
    assert await backend.prune(JobState.COMPLETED, NOW + 1, 10) == 0  # strictly before
    assert await backend.prune(JobState.COMPLETED, NOW + 50, 10) == 1
    assert await backend.get_job(old) is None
    assert await backend.get_events(old) == [] and await backend.get_logs(old) == []
    assert await backend.get_job(new) is not None
    assert (await backend.counts(None))["completed"] == 1


async def test_logs_and_progress(backend: RedisBackend) -> None:
    [job_id] = await enqueue(backend, new_job())
    await backend.claim(claim_params())
    assert await backend.set_progress(job_id, "tok", 40, NOW)
    await backend.append_logs(
        [LogEntry(job_id, NOW, "INFO", "one ü", 1), LogEntry(job_id, NOW + 1, "ERROR", "two", 1)]
    )
    await backend.append_logs([LogEntry(987654, NOW, "INFO", "lost", 1)])  # no such job
    logs = await backend.get_logs(job_id)
    assert [(r.level, r.message, r.attempt) for r in logs] == [
        ("INFO", "one ü", 1),
        ("ERROR", "two", 1),
    ]
    assert logs[1].at.timestamp() == NOW + 1
    job = await backend.get_job(job_id)
    assert job is not None and job.progress == 40
    progress = (await backend.get_events(job_id))[-1]
    assert (progress.type, progress.data, progress.attempt) == ("progress", {"progress": 40}, 1)


async def test_locks_use_the_callers_clock(backend: RedisBackend) -> None:
    assert await backend.acquire_lock("prune", "a", 10, NOW)
    assert await backend.acquire_lock("prune", "a", 10, NOW + 5)  # renew
    assert not await backend.acquire_lock("prune", "b", 10, NOW + 14)
    await backend.release_lock("prune", "b")  # not the owner: no effect
    assert not await backend.acquire_lock("prune", "b", 10, NOW + 14)
    assert await backend.acquire_lock("prune", "b", 10, NOW + 15)  # expired by the clock
    await backend.release_lock("prune", "b")
    assert await backend.acquire_lock("prune", "a", 10, NOW + 15)


async def test_cron_compare_and_swap(backend: RedisBackend) -> None:
    record = CronRecord(
        name="digest",
        expression="0 6 * * *",
        job="digest-job",
        payload="{}",
        timezone="Europe/Amsterdam",
        paused=False,
        allow_overlap=False,
        catch_up=None,
        options='{"priority": 1}',
        next_run_at=NOW,
    )
    await backend.upsert_cron(record)
    assert await backend.list_cron() == [record]
    fire = CronFire(
        name="digest",
        expected_next=NOW,
        new_next=NOW + 86400,
        tick=NOW,
        job=new_job("digest-job", idempotency_key="cron:digest:1"),
        now=NOW,
    )
    won, job_id = await backend.fire_cron(fire)
    assert won and job_id is not None
    assert await backend.fire_cron(fire) == (False, None)  # the tick fired already
    [stored] = await backend.list_cron()
    assert (stored.next_run_at, stored.last_run_at, stored.last_job_id) == (
        NOW + 86400,
        NOW,
        job_id,
    )
    # upsert keeps the run history; a paused schedule never fires
    await backend.upsert_cron(
        CronRecord(**{**_fields(record), "expression": "0 7 * * *", "next_run_at": NOW + 100})
    )
    assert await backend.set_cron_paused("digest", True, None)
    [stored] = await backend.list_cron()
    assert stored.paused and stored.next_run_at == NOW + 100 and stored.last_job_id == job_id
    skip = CronFire("digest", NOW + 100, NOW + 200, NOW + 100, None, NOW + 100)
    assert await backend.fire_cron(skip) == (False, None)
    assert await backend.set_cron_paused("digest", False, NOW + 150)
    assert await backend.fire_cron(skip) == (False, None)  # next_run_at moved on
    assert await backend.fire_cron(CronFire("digest", NOW + 150, None, NOW + 150, None, NOW)) == (
        True,
        None,
    )
    assert not await backend.set_cron_paused("nope", True, None)
    assert await backend.delete_cron(["digest", "nope"]) == 1
    assert await backend.list_cron() == []


def _fields(record: CronRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}


# -- events and wake-ups ----------------------------------------------------------------------


async def test_read_events_from_the_stream(make_backend: Any) -> None:
    reader: RedisBackend = await make_backend()
    writer: RedisBackend = await make_backend()
    events, cursor = await reader.read_events(None, 100, 0)
    assert events == []
    [job_id] = await enqueue(writer, new_job("e", tenant="t"))
    events, cursor = await reader.read_events(cursor, 100, 0)
    assert [(e.type, e.job_id, e.job_name, e.tenant) for e in events] == [
        ("enqueued", job_id, "e", "t")
    ]
    # a blocking read returns as soon as another connection writes an event
    started = time.monotonic()
    pending = reader.read_events(cursor, 100, 10.0)
    task = asyncio.ensure_future(pending)
    await asyncio.sleep(0.05)
    await writer.claim(claim_params())
    events, cursor = await asyncio.wait_for(task, 5)
    assert [e.type for e in events] == ["started"] and time.monotonic() - started < 5
    assert await reader.read_events(cursor, 100, 0.05) == ([], cursor)


async def test_read_events_pages_through_big_batches(backend: RedisBackend) -> None:
    _, cursor = await backend.read_events(None, 10, 0)
    ids = await enqueue(backend, *(new_job(f"n{i}") for i in range(120)))  # one script call
    seen: list[int] = []
    for _ in range(10):
        events, cursor = await backend.read_events(cursor, 30, 0)
        assert len(events) <= 30
        seen += [e.job_id for e in events]
        if not events:
            break
    assert seen == ids
    assert await backend.read_events(cursor, 30, 0) == ([], cursor)


async def test_wait_for_work_wakes_on_enqueue_from_another_connection(make_backend: Any) -> None:
    worker: RedisBackend = await make_backend()
    producer: RedisBackend = await make_backend()
    await worker.claim(claim_params(channels=("emails",)))  # this process serves "emails"
    await worker.wait_for_work(0.01)  # consume any stale marker
    loop = asyncio.get_running_loop()

    waiting = asyncio.ensure_future(worker.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await enqueue(producer, new_job(channel="texts"))  # another channel: no wake-up
    await asyncio.sleep(0.2)
    assert not waiting.done()
    started = loop.time()
    await enqueue(producer, new_job(channel="emails"))
    await asyncio.wait_for(waiting, 5)
    assert loop.time() - started < 2


async def test_promotion_wakes_idle_workers_elsewhere(make_backend: Any) -> None:
    worker: RedisBackend = await make_backend()
    other: RedisBackend = await make_backend()
    [job_id] = await enqueue(other, new_job(state=JobState.SCHEDULED, run_at=NOW + 5))
    await worker.wait_for_work(0.01)  # consume any stale marker
    waiting = asyncio.ensure_future(worker.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert await other.promote_due(NOW + 5, 0.0, 100) == (1, None)
    await asyncio.wait_for(waiting, 5)
    assert await claim_ids(worker, now=NOW + 5) == [job_id]


async def test_wake_from_another_thread_and_times_out(backend: RedisBackend) -> None:
    loop = asyncio.get_running_loop()
    await backend.wait_for_work(0.01)
    started = loop.time()
    await backend.wait_for_work(0.3)  # nothing happens: returns after the timeout
    assert 0.25 <= loop.time() - started < 2
    timer = threading.Timer(0.2, backend.wake)
    timer.start()
    started = loop.time()
    await asyncio.wait_for(backend.wait_for_work(30), 5)
    assert loop.time() - started < 2
    # the blocking connection still works after being unblocked
    await enqueue(backend, new_job())
    await asyncio.wait_for(backend.wait_for_work(30), 5)
    # concurrent waiters in one process share the one blocking pop
    a = asyncio.ensure_future(backend.wait_for_work(30))
    b = asyncio.ensure_future(backend.wait_for_work(30))
    await asyncio.sleep(0.1)
    backend.wake()
    await asyncio.wait_for(asyncio.gather(a, b), 5)


async def test_many_jobs_one_script(backend: RedisBackend) -> None:
    """A big batch goes in one call and stays in order."""
    jobs = [new_job(f"n{i}", run_at=NOW - 1 + i * 1e-6) for i in range(2000)]
    ids = await enqueue(backend, *jobs)
    assert ids == sorted(ids) and len(set(ids)) == 2000
    claimed = await backend.claim(claim_params(limit=500))
    assert [j.name for j in claimed] == [f"n{i}" for i in range(500)]


def test_order_key_examples() -> None:
    assert order_key(0.0) == "8000000000000000"
    assert order_key(-1.0) < order_key(-0.5) < order_key(0.0) < order_key(1e-300) < order_key(NOW)
    assert order_key(NOW) < order_key(math.nextafter(NOW, math.inf))

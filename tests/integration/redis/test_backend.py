"""The Redis backend against a real Redis: enqueue, the hot path and its encoding."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conveyor.backends.base import (
    CancelOutcome,
    EnqueueParams,
    HeartbeatParams,
    JobFilter,
    PromoteResult,
)
from conveyor.backends.redis.backend import RedisBackend
from conveyor.backends.redis.keys import order_key
from conveyor.errors import UnsupportedError
from conveyor.models import JobState
from tests.integration.redis.helpers import (
    NOW,
    Raw,
    claim_ids,
    claim_params,
    done,
    enqueue,
    new_job,
    progress,
    promote,
    prune,
)


async def test_enqueued_event_is_the_hash_unless_the_job_is_removable(
    backend: RedisBackend, raw: Raw
) -> None:
    plain, removable = await enqueue(
        backend,
        new_job("send", tenant="acme"),
        new_job("send", tenant="acme", remove_on_complete=True),
    )
    # one key less per job: only the removable job (whose events outlive it) stores it
    assert raw.client.exists(raw.keys.events(plain)) == 0
    assert raw.client.exists(raw.keys.events(removable)) == 1
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


# -- encoding ------------------------------------------------------------------------------


@given(st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_order_key_sorts_like_the_float(a: float, b: float) -> None:
    if a == b:  # 0.0 == -0.0: either order is fine
        return
    assert (order_key(a) < order_key(b)) == (a < b)
    assert len(order_key(a)) == 16


def test_order_key_examples() -> None:
    assert order_key(0.0) == "8000000000000000"
    assert order_key(-1.0) < order_key(-0.5) < order_key(0.0) < order_key(1e-300) < order_key(NOW)
    assert order_key(NOW) < order_key(math.nextafter(NOW, math.inf))


# -- the hot path --------------------------------------------------------------------------


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


async def test_scheduled_jobs_wait_for_promote_due(backend: RedisBackend) -> None:
    a, b, c = await enqueue(
        backend,
        new_job("a", state=JobState.SCHEDULED, run_at=NOW + 10),
        new_job("b", state=JobState.SCHEDULED, run_at=NOW + 20),
        new_job("c", state=JobState.SCHEDULED, run_at=NOW + 30),
    )
    assert await claim_ids(backend) == []
    assert await claim_ids(backend, now=NOW + 10) == []  # due, but promote_due decides
    job = await backend.get_job(a)
    assert job is not None and job.state is JobState.SCHEDULED
    # promoted ahead of time (the look-ahead): the earliest still in the future comes back
    assert await backend.promote_due(promote(NOW + 10, 10.0)) == PromoteResult(2, NOW + 20)
    job = await backend.get_job(b)
    assert job is not None and job.state is JobState.QUEUED
    assert await claim_ids(backend, now=NOW + 10) == [a]
    assert await claim_ids(backend, now=NOW + 15) == []  # queued early, not due yet
    assert await claim_ids(backend, now=NOW + 20) == [b]
    assert await backend.promote_due(promote(NOW + 40)) == PromoteResult(1, None)
    assert await backend.promote_due(promote(NOW + 40)) == PromoteResult(0, None)
    assert await claim_ids(backend, now=NOW + 40) == [c]
    # at most `limit` per call, earliest first
    later, sooner = await enqueue(
        backend,
        new_job("later", state=JobState.SCHEDULED, run_at=NOW + 51),
        new_job("sooner", state=JobState.SCHEDULED, run_at=NOW + 50),
    )
    assert await backend.promote_due(promote(NOW + 60, limit=1)) == PromoteResult(1, None)
    assert await claim_ids(backend, now=NOW + 60) == [sooner]
    assert await backend.promote_due(promote(NOW + 60, limit=1)) == PromoteResult(1, None)
    assert await claim_ids(backend, now=NOW + 60) == [later]
    # every index ends up consistent
    assert await backend.list_jobs(JobFilter(state=JobState.QUEUED)) == []
    assert await backend.list_jobs(JobFilter(state=JobState.SCHEDULED)) == []
    counts = await backend.counts(None)
    assert (counts["running"], counts["queued"], counts["scheduled"]) == (5, 0, 0)
    assert await backend.counts("default") == counts
    [stats] = await backend.channel_stats()
    assert stats.oldest_queued_run_at is None and stats.counts == {"running": 5}


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
    assert not await backend.set_progress(progress(job_id, "old", 50))
    hb = await backend.heartbeat(HeartbeatParams([(job_id, "old")], NOW, NOW + 60))
    assert hb.lost == {job_id}
    job = await backend.get_job(job_id)
    assert job is not None and job.state is JobState.RUNNING and job.progress == 0
    assert await backend.set_progress(progress(job_id, "new", 50))
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
    assert await backend.promote_due(promote(NOW + 60)) == PromoteResult(1, None)
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
    assert await backend.promote_due(promote(NOW + 100)) == PromoteResult(1, None)
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
    await backend.set_paused("emails", True)
    assert await claim_ids(backend, token="a", channels=("emails",)) == []
    assert await claim_ids(backend, token="a") == [sms]
    await backend.set_paused("emails", False)
    assert await claim_ids(backend, token="b", exclude=("mail",)) == [report]
    assert await claim_ids(backend, token="c", include=("sms", "report")) == []
    assert await claim_ids(backend, token="d", channels=("texts",)) == []
    assert await claim_ids(backend, token="e", channels=("emails", "texts"), include=("mail",)) == [
        mail
    ]


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
    assert (await backend.prune(prune(JobState.COMPLETED, NOW + 2))).count == 3
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


async def test_many_jobs_one_script(backend: RedisBackend) -> None:
    """A big batch goes in one call and stays in order."""
    jobs = [new_job(f"n{i}", run_at=NOW - 1 + i * 1e-6) for i in range(2000)]
    ids = await enqueue(backend, *jobs)
    assert ids == sorted(ids) and len(set(ids)) == 2000
    claimed = await backend.claim(claim_params(limit=500))
    assert [j.name for j in claimed] == [f"n{i}" for i in range(500)]

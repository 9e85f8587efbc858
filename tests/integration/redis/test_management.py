"""The Redis backend against a real Redis: pauses, inspection, management, locks, cron."""

from __future__ import annotations

import json
from typing import Any

from conveyor.backends.base import (
    CancelOutcome,
    CronFire,
    CronFireResult,
    CronPause,
    CronRecord,
    HeartbeatParams,
    JobFilter,
    LockParams,
    LogEntry,
    Outcome,
    RetryOutcome,
    RetryResult,
)
from conveyor.backends.redis.backend import RedisBackend
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
    prune,
)


def lock(owner: str, now: float, name: str = "prune", ttl: float = 10) -> LockParams:
    return LockParams(name=name, owner=owner, ttl=ttl, now=now)


# -- pauses --------------------------------------------------------------------------------


async def test_pausing_every_channel(backend: RedisBackend) -> None:
    """One contract on every backend (``Backend.set_paused``), here through claims."""
    [mail] = await enqueue(backend, new_job("mail", channel="emails"))
    await backend.set_paused(None, True)
    assert await claim_ids(backend) == []
    assert await claim_ids(backend, channels=("emails",)) == []
    # also channels that do not exist yet
    [fresh] = await enqueue(backend, new_job("fresh", channel="fresh"))
    assert await claim_ids(backend, channels=("fresh",)) == []
    # resuming one channel leaves it paused while every channel is
    await backend.set_paused("emails", False)
    assert await claim_ids(backend, channels=("emails",)) == []
    # resuming everything lifts the every-channel pause and each channel's own
    await backend.set_paused("texts", True)
    [sms] = await enqueue(backend, new_job("sms", channel="texts"))
    await backend.set_paused(None, False)
    assert sorted(await claim_ids(backend)) == sorted([mail, fresh, sms])
    # a channel paused before every channel was is resumed with everything
    await backend.set_paused("emails", True)
    await backend.set_paused(None, True)
    await backend.set_paused(None, False)
    [again] = await enqueue(backend, new_job("again", channel="emails"))
    assert await claim_ids(backend, channels=("emails",)) == [again]


async def test_a_channel_named_star_is_just_a_channel(backend: RedisBackend) -> None:
    star, plain = await enqueue(
        backend, new_job("star", channel="*"), new_job("plain", channel="plain")
    )
    await backend.set_paused("*", True)  # pauses "*" only
    assert await claim_ids(backend, token="f") == [plain]
    assert await claim_ids(backend, token="f", channels=("*",)) == []
    assert (await backend.counts("*"))["queued"] == 1  # its own counts, not everyone's
    assert (await backend.counts("*"))["running"] == 0
    assert (await backend.counts(None))["running"] == 1
    await backend.set_paused("*", False)
    assert await claim_ids(backend, token="g") == [star]
    assert (await backend.counts("*"))["running"] == 1
    # pausing everything pauses "*" too, and resuming "*" does not resume everything
    late_star, late_plain = await enqueue(
        backend, new_job("star", channel="*"), new_job("plain", channel="plain")
    )
    await backend.set_paused(None, True)
    await backend.set_paused("*", False)
    assert await claim_ids(backend, token="h") == []
    assert await claim_ids(backend, token="h", channels=("*",)) == []
    await backend.set_paused(None, False)
    assert sorted(await claim_ids(backend, token="i")) == sorted([late_star, late_plain])


# -- inspection and management -------------------------------------------------------------


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
    not_retryable = RetryOutcome.NOT_RETRYABLE
    assert await backend.retry(job_id, NOW) == RetryResult(not_retryable, JobState.QUEUED)
    await backend.claim(claim_params())
    assert await backend.retry(job_id, NOW) == RetryResult(not_retryable, JobState.RUNNING)
    err = json.dumps({"attempt": 1, "type": "E", "message": "m"})
    await backend.complete_many([done(job_id, state=JobState.FAILED, error=err)])
    assert await backend.retry(job_id, NOW + 5) == RetryResult(RetryOutcome.RETRIED)
    job = await backend.get_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 0
    assert len(job.errors) == 1 and job.finished_at is None and job.run_at.timestamp() == NOW + 5
    assert await claim_ids(backend, now=NOW + 5) == [job_id]
    assert await backend.retry(424242, NOW) == RetryResult(RetryOutcome.MISSING)
    # a cancelled job is retried too; a completed one is not
    [cancelled] = await enqueue(backend, new_job())
    assert await backend.cancel(cancelled, NOW) == CancelOutcome.CANCELLED
    assert await backend.retry(cancelled, NOW) == RetryResult(RetryOutcome.RETRIED)
    await backend.complete_many([done(job_id)])
    assert await backend.retry(job_id, NOW) == RetryResult(not_retryable, JobState.COMPLETED)


async def test_prune_deletes_jobs_with_events_and_logs(backend: RedisBackend) -> None:
    old, new = await enqueue(backend, new_job("old"), new_job("new"))
    await backend.claim(claim_params(limit=2))
    await backend.append_logs([LogEntry(old, "tok", NOW, "INFO", "hello", 1)])
    await backend.complete_many([done(old)])
    await backend.complete_many(
        [
            Outcome(
                job_id=new, token="tok", state=JobState.COMPLETED, at=NOW + 100, event="completed"
            )
        ]
    )
    assert (await backend.prune(prune(JobState.COMPLETED, NOW + 1))).count == 0  # strictly before
    assert (await backend.prune(prune(JobState.FAILED, NOW + 200))).count == 0  # another state
    assert (await backend.prune(prune(JobState.COMPLETED, NOW + 50))).count == 1
    assert await backend.get_job(old) is None
    assert await backend.get_events(old) == [] and await backend.get_logs(old) == []
    assert await backend.get_job(new) is not None
    assert (await backend.counts(None))["completed"] == 1


async def test_logs_and_progress(backend: RedisBackend) -> None:
    [job_id] = await enqueue(backend, new_job())
    await backend.claim(claim_params())
    assert await backend.set_progress(progress(job_id, "tok", 40))
    await backend.append_logs(
        [
            LogEntry(job_id, "tok", NOW, "INFO", "one ü", 1),
            LogEntry(job_id, "tok", NOW + 1, "ERROR", "two", 1),
        ]
    )
    await backend.append_logs([LogEntry(987654, "tok", NOW, "INFO", "lost", 1)])  # no such job
    logs = await backend.get_logs(job_id)
    assert [(r.level, r.message, r.attempt) for r in logs] == [
        ("INFO", "one ü", 1),
        ("ERROR", "two", 1),
    ]
    assert logs[1].at.timestamp() == NOW + 1
    job = await backend.get_job(job_id)
    assert job is not None and job.progress == 40
    event = (await backend.get_events(job_id))[-1]
    assert (event.type, event.data, event.attempt) == ("progress", {"progress": 40}, 1)


# -- locks and cron ------------------------------------------------------------------------


async def test_locks_use_the_callers_clock(backend: RedisBackend, raw: Raw) -> None:
    assert await backend.acquire_lock(lock("a", NOW))
    assert await backend.acquire_lock(lock("a", NOW + 5))  # renew: now held until NOW + 15
    assert not await backend.acquire_lock(lock("b", NOW + 14))  # another owner cannot
    assert not await backend.acquire_lock(lock("b", NOW + 14.999))  # ... nor take it over
    assert await backend.acquire_lock(lock("b", NOW, name="other"))  # names are separate
    assert await backend.acquire_lock(lock("b", NOW + 15))  # expired by the clock
    assert not await backend.acquire_lock(lock("a", NOW + 16))  # b holds it now
    assert await backend.acquire_lock(lock("b", NOW + 16, ttl=1))  # renewed shorter
    assert await backend.acquire_lock(lock("a", NOW + 17))
    # Redis' own expiry only collects abandoned records, long after the caller's expiry
    ttl_ms = raw.client.pttl(raw.keys.lock("prune"))
    assert 10_000 < ttl_ms <= 10_000 + 60_000


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
    fired = await backend.fire_cron(fire)
    assert fired.won and fired.job_id is not None
    job_id = fired.job_id
    job = await backend.get_job(job_id)
    assert job is not None and job.name == "digest-job" and job.state is JobState.QUEUED
    assert await backend.fire_cron(fire) == CronFireResult(False, None)  # fired already
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
    assert await backend.set_cron_paused(CronPause("digest", True, None))
    [stored] = await backend.list_cron()
    assert stored.paused and stored.next_run_at == NOW + 100 and stored.last_job_id == job_id
    skip = CronFire("digest", NOW + 100, NOW + 200, NOW + 100, None, NOW + 100)
    assert await backend.fire_cron(skip) == CronFireResult(False, None)
    assert await backend.set_cron_paused(CronPause("digest", False, NOW + 150))
    assert await backend.fire_cron(skip) == CronFireResult(False, None)  # moved on
    last = CronFire("digest", NOW + 150, None, NOW + 150, None, NOW)
    assert await backend.fire_cron(last) == CronFireResult(True, None)  # a skipped tick
    [stored] = await backend.list_cron()
    assert (stored.next_run_at, stored.last_run_at, stored.last_job_id) == (None, NOW + 150, job_id)
    assert not await backend.set_cron_paused(CronPause("nope", True, None))
    assert await backend.delete_cron(["digest", "nope"]) == 1
    assert await backend.list_cron() == []


def _fields(record: CronRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}

"""The direct hand-off: an idle worker's wait carries a standing claim, and an enqueue
stores a new due job that claim would take as claimed by it, in the same script, and
hands it over in the reply of the worker's blocking pop (the hand-off in ``_lib.lua``,
:mod:`conveyor.backends.redis.handoff`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conveyor.backends.base import ClaimedJob, ClaimParams, HeartbeatParams, NewJob, Outcome
from conveyor.backends.redis import codec
from conveyor.backends.redis.backend import RedisBackend
from conveyor.models import JobState
from tests.integration.redis.helpers import (
    NOW,
    Raw,
    claim_params,
    enqueue,
    hand_id,
    new_job,
    wait_until,
)

LEASE = 30.0


def standing(token: str = "stand", limit: int = 10, now: float = NOW, **kw: Any) -> ClaimParams:
    return ClaimParams(
        worker_id="w1", token=token, limit=limit, now=now, lease_expires_at=now + LEASE, **kw
    )


async def wait_while(
    raw: Raw,
    backend: RedisBackend,
    claim: ClaimParams,
    act: Callable[[], Awaitable[Any]],
    timeout: float = 30,
) -> list[ClaimedJob]:
    """Start ``backend``'s wait with ``claim``; once it stands, ``act``; what it returns."""
    await backend.wait_for_work(0.01)  # consume stale wake-ups
    waiting = asyncio.ensure_future(backend.wait_for_work(timeout, claim))
    await wait_until(lambda: raw.registered(backend) or waiting.done())
    assert not waiting.done()
    await act()
    return await asyncio.wait_for(waiting, 5)


async def enqueue_while_waiting(
    raw: Raw,
    worker: RedisBackend,
    claim: ClaimParams,
    *jobs: NewJob,
    producer: RedisBackend | None = None,
) -> tuple[list[ClaimedJob], list[int]]:
    """:func:`wait_while` whose act is one enqueue of ``jobs`` (by ``producer``, else by
    the worker's backend): the jobs handed over, and the ids the enqueue returned."""
    got: list[int] = []

    async def act() -> None:
        got.extend(await enqueue(producer or worker, *jobs))

    return await wait_while(raw, worker, claim, act), got


def ids(jobs: list[ClaimedJob]) -> list[int]:
    return [j.id for j in jobs]


async def test_an_enqueue_hands_due_jobs_to_a_waiting_worker(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    producer: RedisBackend = await make_backend()
    handed, got = await enqueue_while_waiting(
        raw,
        worker,
        standing(limit=2),
        new_job("c", priority=2),
        new_job("a"),
        new_job("b", priority=1),
        producer=producer,
    )
    c, a, b = got
    assert ids(handed) == [a, b]  # its limit, in claim order
    for job in handed:
        assert (job.token, job.attempts, job.payload, job.channel) == (
            "stand",
            1,
            '{"n": 1}',
            "default",
        )
        row = raw.job(job.id)
        assert row["state"] == "running" and row["attempts"] == "1"
        assert row["lease_token"] == "stand" and row["worker_id"] == "w1"
        assert float(row["lease_expires_at"]) == NOW + LEASE
        assert float(row["started_at"]) == NOW
        assert raw.client.zscore(raw.keys.fixed("leases"), str(job.id)) == NOW + LEASE
        assert [e.type for e in await worker.get_events(job.id)] == ["enqueued", "started"]
    assert raw.state(c) == "queued"
    assert await worker.counts(None) == {**dict.fromkeys(map(str, JobState), 0), "queued": 1,
                                         "running": 2}  # fmt: skip
    assert await worker.counts("default") == await worker.counts(None)
    # the registration is used up, its key emptied; the job left over wakes workers
    assert not raw.registered(worker)
    assert not raw.client.exists(raw.keys.hand(hand_id(worker)))
    assert raw.markers() == 1
    # the claim's token fences the handed jobs like any claim's
    now = NOW + 1
    assert await worker.complete_many(
        [Outcome(a, "stand", JobState.COMPLETED, now, "completed")]
    ) == [True]
    [rest] = await worker.claim(claim_params(now=NOW + 1))
    assert rest.id == c


async def test_without_a_standing_claim_an_enqueue_only_wakes(
    backend: RedisBackend, raw: Raw
) -> None:
    [job_id] = await enqueue(backend, new_job())
    assert raw.state(job_id) == "queued"
    assert not raw.client.exists(raw.keys.waiters)
    assert raw.markers() == 1


async def test_the_lease_runs_from_the_hand_off(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    # the caller's clock said NOW - 10 when it began to wait (lease length 30)
    claim = standing(now=NOW - 10)
    handed = await wait_while(
        raw, worker, claim, lambda: enqueue(worker, new_job(run_at=NOW), now=NOW)
    )
    [job] = handed
    row = raw.job(job.id)
    assert float(row["lease_expires_at"]) == NOW + LEASE
    assert float(row["started_at"]) == NOW


async def test_channels_and_names_are_respected(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    claim = standing(channels=("emails",), include=("x", "skip-me"), exclude=("skip-me",))
    handed, got = await enqueue_while_waiting(
        raw,
        worker,
        claim,
        new_job("x", channel="texts"),
        new_job("skip-me", channel="emails"),
        new_job("y", channel="emails"),
        new_job("x", channel="emails"),
    )
    assert ids(handed) == [got[3]]
    assert [raw.state(i) for i in got[:3]] == ["queued"] * 3


async def test_a_paused_channel_is_not_handed_over(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    await worker.set_paused("emails", True)
    handed, got = await enqueue_while_waiting(
        raw,
        worker,
        standing(channels=("emails", "texts")),
        new_job(channel="emails"),
        new_job(channel="texts"),
    )
    assert ids(handed) == [got[1]]
    assert raw.state(got[0]) == "queued"


async def test_a_paused_channel_named_star_is_just_a_channel(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    await worker.set_paused("*", True)
    handed, got = await enqueue_while_waiting(
        raw,
        worker,
        standing(channels=("*", "texts")),
        new_job(channel="*"),
        new_job(channel="texts"),
    )
    assert ids(handed) == [got[1]]  # "*" is paused, the others are not
    assert raw.state(got[0]) == "queued"
    # resumed, "*" is handed over like any channel
    await worker.set_paused("*", False)
    assert ids(await worker.claim(claim_params(token="t0", channels=("*",)))) == [got[0]]
    handed, got = await enqueue_while_waiting(
        raw, worker, standing(channels=("*",)), new_job(channel="*")
    )
    assert ids(handed) == got


async def test_resuming_one_channel_while_everything_is_paused_hands_nothing_over(
    make_backend: Any, raw: Raw
) -> None:
    worker: RedisBackend = await make_backend()
    await worker.set_paused(None, True)
    await worker.set_paused("*", False)
    await worker.set_paused("texts", False)
    handed, got = await enqueue_while_waiting(
        raw, worker, standing(), new_job(channel="*"), new_job(channel="texts")
    )
    assert handed == []
    assert [raw.state(i) for i in got] == ["queued", "queued"]


async def test_nothing_is_handed_over_while_everything_is_paused(
    make_backend: Any, raw: Raw
) -> None:
    worker: RedisBackend = await make_backend()
    await worker.set_paused(None, True)
    # the marker still ends the wait; nothing was claimed, nothing stays registered
    handed, got = await enqueue_while_waiting(raw, worker, standing(), new_job())
    assert handed == []
    assert raw.state(got[0]) == "queued" and not raw.registered(worker)


async def test_groups_are_handed_over_only_when_free_and_then_locked(
    make_backend: Any, raw: Raw
) -> None:
    worker: RedisBackend = await make_backend()
    [busy] = await enqueue(worker, new_job(group="busy"))
    assert ids(await worker.claim(claim_params(token="t0"))) == [busy]
    handed, got = await enqueue_while_waiting(
        raw,
        worker,
        standing(),
        new_job("member", group="busy"),
        new_job("first", group="free"),
        new_job("second", group="free"),
    )
    member, first, second = got
    assert ids(handed) == [first]  # one per group, and none of the busy group
    assert handed[0].group == "free"
    assert raw.client.hget(raw.keys.fixed("glock"), "free") == str(first)
    assert raw.state(member) == "queued" and raw.state(second) == "queued"
    # the free group's next member waits for the first, as after a claim
    assert ids(await worker.claim(claim_params(token="t1"))) == []


async def test_a_group_with_a_queued_member_is_not_handed_over(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    [waiting] = await enqueue(worker, new_job("first", group="g", channel="a"))
    got: list[int] = []

    async def act() -> None:  # its channel is empty: only the group holds it back
        got.extend(await enqueue(worker, new_job("second", group="g", channel="b")))
        assert raw.state(got[0]) == "queued"  # behind the group's member: nothing new
        worker.wake()  # is claimable, so no wake-up either

    assert await wait_while(raw, worker, standing(), act) == []
    assert ids(await worker.claim(claim_params())) == [waiting]


async def test_only_due_jobs_are_handed_over(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    handed, got = await enqueue_while_waiting(
        raw,
        worker,
        standing(),
        new_job("later", state=JobState.SCHEDULED, run_at=NOW + 60),
        new_job("not-yet", run_at=NOW + 1),  # queued, but not due at `now`
        new_job("now"),
    )
    assert [j.name for j in handed] == ["now"]
    assert [raw.state(i) for i in got[:2]] == ["scheduled", "queued"]


async def test_a_new_job_never_jumps_a_job_queued_ahead_of_it(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    [better] = await enqueue(worker, new_job("better", priority=-5))
    # not handed over: queued behind the better job, and the wait ends on its marker
    handed, got = await enqueue_while_waiting(
        raw, worker, standing(limit=1), new_job("new", priority=5)
    )
    assert handed == []
    assert raw.state(got[0]) == "queued" and not raw.registered(worker)
    assert ids(await worker.claim(claim_params(limit=1))) == [better]
    # a job that sorts first in its channel is handed over, ahead of worse ones
    [worse] = await enqueue(worker, new_job("worse", priority=9))
    handed = await wait_while(
        raw, worker, standing(limit=1), lambda: enqueue(worker, new_job("best", priority=-9))
    )
    assert [j.name for j in handed] == ["best"]
    assert raw.state(worse) == "queued"


async def test_a_batch_is_handed_over_in_claim_order(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    handed, got = await enqueue_while_waiting(
        raw,
        worker,
        standing(limit=3),
        new_job("late", run_at=NOW - 1),
        new_job("low", priority=3, run_at=NOW - 5),
        new_job("early", run_at=NOW - 2),
        new_job("top", priority=-1, run_at=NOW - 0.5),
    )
    assert [j.name for j in handed] == ["top", "early", "late"]
    assert raw.state(got[1]) == "queued" and raw.markers() == 1


async def test_one_batch_feeds_several_waiters(make_backend: Any, raw: Raw) -> None:
    first: RedisBackend = await make_backend()
    second: RedisBackend = await make_backend()
    producer: RedisBackend = await make_backend()
    await first.wait_for_work(0.01)
    await second.wait_for_work(0.01)
    waits = [
        asyncio.ensure_future(b.wait_for_work(30, standing(token=t, limit=2)))
        for b, t in ((first, "one"), (second, "two"))
    ]
    await wait_until(lambda: raw.registered(first) and raw.registered(second))
    jobs = (new_job(f"n{i}", run_at=NOW + i * 1e-6) for i in range(5))
    got = await enqueue(producer, *jobs, now=NOW + 1)
    one, two = await asyncio.wait_for(asyncio.gather(*waits), 5)
    assert len(one) == 2 and len(two) == 2
    assert {j.token for j in one} == {"one"} and {j.token for j in two} == {"two"}
    assert sorted(ids(one) + ids(two)) == got[:4]  # in claim order across the waiters
    assert raw.state(got[4]) == "queued" and raw.markers() == 1


async def test_an_expired_registration_is_dropped_not_served(
    backend: RedisBackend, raw: Raw
) -> None:
    waiter = hand_id(backend)
    # a worker that stopped waiting at NOW - 1 without saying so (it died, say)
    registration = codec.registration(standing(now=NOW - 31), expires_at=NOW - 1)
    raw.client.hset(raw.keys.waiters, waiter, registration)
    assert raw.client.hexists(raw.keys.waiters, waiter)
    [job_id] = await enqueue(backend, new_job())
    assert raw.state(job_id) == "queued" and raw.markers() == 1
    assert not raw.client.exists(raw.keys.waiters)
    assert not raw.client.exists(raw.keys.hand(waiter))


@pytest.mark.parametrize(
    "registration",
    ["not json", "[1, 2]", '{"t": "x", "w": "w", "n": 1, "l": "30", "x": "9e99", "c": "ch"}'],
)
async def test_a_malformed_registration_never_fails_an_enqueue(
    backend: RedisBackend, raw: Raw, registration: str
) -> None:
    raw.client.hset(raw.keys.waiters, "foreign", registration)
    [job_id] = await enqueue(backend, new_job())
    assert raw.state(job_id) == "queued"
    assert not raw.client.exists(raw.keys.waiters)  # dropped on sight


async def test_the_release_returns_a_hand_off_that_raced_the_end_of_the_wait(
    backend: RedisBackend, raw: Raw
) -> None:
    hand: Any = backend._waker._hand  # type: ignore[union-attr]
    raw.client.hset(raw.keys.waiters, hand.id, codec.registration(standing(), NOW + 30))
    [job_id] = await enqueue(backend, new_job())  # handed over while nobody pops
    assert raw.state(job_id) == "running" and raw.client.zcard(raw.keys.hand(hand.id)) == 1
    [job] = await hand.release(NOW + 5, NOW + 5 + LEASE)
    assert (job.id, job.token, job.attempts) == (job_id, "stand", 1)
    assert float(raw.job(job_id)["lease_expires_at"]) == NOW + 5 + LEASE  # renewed
    assert raw.client.zscore(raw.keys.fixed("leases"), str(job_id)) == NOW + 5 + LEASE
    assert not raw.registered(backend) and not raw.client.exists(raw.keys.hand(hand.id))
    assert await hand.release(NOW, NOW + LEASE) == []


@pytest.mark.parametrize("lost_by", ["completed elsewhere", "rescued"])
async def test_the_release_drops_jobs_no_longer_held(
    backend: RedisBackend, raw: Raw, lost_by: str
) -> None:
    hand: Any = backend._waker._hand  # type: ignore[union-attr]
    raw.client.hset(raw.keys.waiters, hand.id, codec.registration(standing(), NOW + 30))
    kept, lost = await enqueue(backend, new_job("kept"), new_job("lost"))
    if lost_by == "completed elsewhere":  # e.g. rescued and run by another worker
        await backend.complete_many([Outcome(lost, "stand", JobState.COMPLETED, NOW, "completed")])
    else:  # its lease ran out and the rescue took it back
        await backend.heartbeat(HeartbeatParams([(lost, "stand")], NOW, NOW + 1))
        rescue = Outcome(
            lost,
            "stand",
            JobState.QUEUED,
            NOW + 2,
            "stalled",
            run_at=NOW + 2,
            expired_before=NOW + 2,
        )
        assert await backend.complete_many([rescue]) == [True]
    assert ids(await hand.release(NOW + 3, NOW + 3 + LEASE)) == [kept]
    assert raw.state(lost) != "running" or raw.job(lost)["lease_token"] != "stand"


async def test_the_release_takes_a_hand_off_whose_lease_ran_out_unrescued(
    backend: RedisBackend, raw: Raw
) -> None:
    """Its waiter is back to run it: it takes it under a fresh lease, and the rescue that
    read the old lease then changes nothing."""
    hand: Any = backend._waker._hand  # type: ignore[union-attr]
    raw.client.hset(raw.keys.waiters, hand.id, codec.registration(standing(), NOW + 30))
    [job_id] = await enqueue(backend, new_job())
    await backend.heartbeat(HeartbeatParams([(job_id, "stand")], NOW, NOW + 1))
    [expired] = await backend.expired_leases(NOW + 2, 10)  # a rescue is on its way
    [job] = await hand.release(NOW + 2, NOW + 2 + LEASE)
    assert (job.id, job.token) == (job_id, "stand")
    assert float(raw.job(job_id)["lease_expires_at"]) == NOW + 2 + LEASE
    rescue = Outcome(
        expired.id, expired.token, JobState.QUEUED, NOW + 2, "stalled", expired_before=NOW + 2
    )
    assert await backend.complete_many([rescue]) == [False]
    assert raw.state(job_id) == "running" and await backend.expired_leases(NOW + 3, 10) == []


async def test_wake_ends_a_standing_wait_and_releases_it(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()

    async def wake_from_another_thread() -> None:
        thread = threading.Thread(target=worker.wake)
        thread.start()
        thread.join()

    assert await wait_while(raw, worker, standing(), wake_from_another_thread) == []
    assert not raw.registered(worker)
    [job_id] = await enqueue(worker, new_job())  # nobody stands: simply queued
    assert raw.state(job_id) == "queued"


async def test_a_timed_out_wait_releases_its_claim(backend: RedisBackend, raw: Raw) -> None:
    await backend.wait_for_work(0.01)
    assert await backend.wait_for_work(0.05, standing()) == []
    assert not raw.registered(backend)


async def test_a_cancelled_wait_leaves_its_jobs_to_the_next_wait(
    make_backend: Any, raw: Raw
) -> None:
    worker: RedisBackend = await make_backend()
    producer: RedisBackend = await make_backend()
    await worker.wait_for_work(0.01)
    waiting = asyncio.ensure_future(worker.wait_for_work(30, standing(token="first")))
    await wait_until(lambda: raw.registered(worker))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # the registration outlives the cancelled wait (until its expiry) and gets a job
    [job_id] = await enqueue(producer, new_job())
    assert raw.state(job_id) == "running"
    # the next wait returns it at once, under the token it was claimed with
    [job] = await asyncio.wait_for(worker.wait_for_work(30, standing(token="second")), 5)
    assert (job.id, job.token) == (job_id, "first")
    assert not raw.registered(worker)


async def test_closing_with_a_claim_left_behind_gives_its_jobs_back(
    make_backend: Any, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    """They never ran: queued again where they were, their attempt refunded (not left to
    a rescue that would count a stalled run), the group they locked freed."""
    worker: RedisBackend = await make_backend()
    producer: RedisBackend = await make_backend()
    await worker.wait_for_work(0.01)
    waiting = asyncio.ensure_future(worker.wait_for_work(30, standing()))
    await wait_until(lambda: raw.registered(worker))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    [job_id] = await enqueue(producer, new_job(group="g"))
    assert raw.state(job_id) == "running"
    waiter = hand_id(worker)
    with caplog.at_level(logging.INFO, logger="conveyor"):
        await worker.close()
    assert "went back to the queue" in caplog.text
    assert not raw.client.hexists(raw.keys.waiters, waiter)
    assert not raw.client.exists(raw.keys.hand(waiter))
    assert await producer.expired_leases(NOW + LEASE, 10) == []
    row = raw.job(job_id)
    assert (row["state"], row["attempts"], row["lease_token"]) == ("queued", "0", "")
    assert (await producer.counts(None))["running"] == 0
    events = await producer.get_events(job_id)
    assert [e.type for e in events] == ["enqueued", "started", "retrying"]
    assert events[-1].at >= events[-2].at
    [again] = await producer.claim(claim_params(token="next"))  # the group is free again
    assert (again.id, again.attempts) == (job_id, 1)


async def test_an_undecodable_hand_off_is_logged_not_raised(
    backend: RedisBackend, raw: Raw, caplog: pytest.LogCaptureFixture
) -> None:
    async def foreign_write() -> None:
        raw.client.zadd(raw.keys.hand(hand_id(backend)), {"not json": 0})

    assert await wait_while(raw, backend, standing(), foreign_write) == []
    assert "could not be decoded" in caplog.text


async def test_handed_over_rows_equal_claimed_rows(make_backend: Any, raw: Raw) -> None:
    worker: RedisBackend = await make_backend()
    job = new_job(
        "ünï/cödé",
        payload=json.dumps({"text": 'quo"te \\ / é ✓', "n": [1, 2.5, None]}),
        tags=("a", "é"),
        tenant="acme",
        options='{"timeout": 5}',
        group="g/1",
        remove_on_complete=True,
        priority=-3,
        max_attempts=7,
    )
    plain = new_job("plain")

    async def act() -> None:
        await enqueue(worker, job)

    [handed] = await wait_while(raw, worker, standing(), act)
    done = Outcome(handed.id, "stand", JobState.COMPLETED, NOW, "completed", remove=True)
    await worker.complete_many([done])
    # removed on completion: its stored events (its `enqueued` one included) outlive it
    assert await worker.get_job(handed.id) is None
    assert [e.type for e in await worker.get_events(handed.id)][:3] == [
        "enqueued",
        "started",
        "completed",
    ]
    await enqueue(worker, job, plain)  # the same rows again, now for an ordinary claim
    claimed = await worker.claim(claim_params(token="stand"))
    [twin] = [c for c in claimed if c.name == job.name]
    assert dataclasses.replace(handed, id=twin.id) == twin
    assert json.loads(handed.payload) == json.loads(job.payload)
    [other] = [c for c in claimed if c.name == "plain"]
    handed_plain: list[ClaimedJob] = []

    async def act_plain() -> None:
        await enqueue(worker, plain)

    handed_plain = await wait_while(raw, worker, standing(), act_plain)
    assert [dataclasses.replace(h, id=other.id) for h in handed_plain] == [other]


# -- the worker --------------------------------------------------------------------------------


class Spy:
    """Records what the backend's ``wait_for_work`` hands over (and can act on it)."""

    def __init__(self, backend: RedisBackend) -> None:
        self.handed: list[ClaimedJob] = []
        self.on_handed: Callable[[], Any] | None = None
        real = backend.wait_for_work

        async def wait_for_work(
            timeout: float, claim: ClaimParams | None = None
        ) -> list[ClaimedJob]:
            jobs = await real(timeout, claim)
            self.handed += jobs
            if jobs and self.on_handed is not None:
                self.on_handed()
            return jobs

        backend.wait_for_work = wait_for_work  # type: ignore[method-assign]


@pytest.fixture
async def rq(redis_url: str, prefix: str) -> Any:
    """A queue on this test's prefix whose idle workers poll only every 30 s, so a job
    that starts at once was handed over or woken, not polled."""
    import conveyor

    q = conveyor.Queue(redis_url, prefix=prefix, poll_interval=30.0, sweep_interval=0.2)
    await q.migrate()
    yield q
    await q.close()


async def test_a_worker_runs_the_jobs_its_wait_hands_over(rq: Any, raw: Raw) -> None:
    from tests.conformance._util import running, wait_state

    ran: list[int] = []

    @rq.job("job")
    async def job(payload: int, ctx: Any) -> None:
        ran.append(payload)

    spy = Spy(await rq.engine.backend())
    worker = rq.worker(concurrency=4)
    async with running(worker):
        await wait_until(lambda: raw.registered(worker.backend))
        [registration] = raw.client.hvals(raw.keys.waiters)
        assert json.loads(registration)["n"] == 4 and json.loads(registration)["w"] == worker.id
        job_id = await rq.enqueue("job", 7)
        await wait_state(rq, job_id, JobState.COMPLETED)
        assert ids(spy.handed) == [job_id] and ran == [7]
        # idle again: it stands again, and the next job is handed over too
        await wait_until(lambda: raw.registered(worker.backend))
        second = await rq.enqueue("job", 8)
        await wait_state(rq, second, JobState.COMPLETED)
        assert ids(spy.handed) == [job_id, second]
    # stopping released the standing claim
    assert not raw.client.exists(raw.keys.waiters)


async def test_stopping_a_registered_worker_is_prompt_and_releases(rq: Any, raw: Raw) -> None:
    worker = rq.worker()
    task = asyncio.ensure_future(worker.run())
    await wait_until(lambda: worker.backend is not None and raw.registered(worker.backend))
    await asyncio.wait_for(worker.stop(), 5)  # not the 30 s poll
    await asyncio.wait_for(task, 5)
    assert not raw.client.exists(raw.keys.waiters)
    job_id = await rq.enqueue("job")
    assert raw.state(job_id) == "queued"


async def test_jobs_handed_over_as_the_worker_stops_still_run(rq: Any, raw: Raw) -> None:
    from tests.conformance._util import wait_state

    @rq.job("job")
    async def job(payload: None, ctx: Any) -> str:
        return "done"

    spy = Spy(await rq.engine.backend())
    worker = rq.worker()
    task = asyncio.ensure_future(worker.run())
    await wait_until(lambda: worker.backend is not None and raw.registered(worker.backend))
    spy.on_handed = worker.request_stop  # stop() arrives with the hand-off
    job_id = await rq.enqueue("job")
    await asyncio.wait_for(task, 10)
    assert ids(spy.handed) == [job_id]
    done = await wait_state(rq, job_id, JobState.COMPLETED)
    assert done.result == "done" and done.attempts == 1


async def test_a_completed_token_hands_its_resumed_job_to_a_waiting_worker(
    make_backend: Any, raw: Raw
) -> None:
    """A job resumed by ``complete_token`` reaches an idle worker as an enqueued job does:
    stored as claimed by it in the same script, its attempt the one it suspended in."""
    from conveyor.backends.records import NewToken, StepSave, TokenCompletion

    worker: RedisBackend = await make_backend()
    producer: RedisBackend = await make_backend()
    [job_id] = await enqueue(producer, new_job("approve"))
    [claimed] = await producer.claim(claim_params(token="first"))
    save = StepSave(
        job_id, "first", "conveyor:token:1", '{"id": "tk"}', NOW, new_token=NewToken("tk", None, ())
    )
    assert await producer.save_step(save)
    suspend = Outcome(
        job_id=job_id, token="first", state=JobState.WAITING, at=NOW, run_at=NOW + 10**9,
        refund_attempt=True, wait_token="tk", event="waiting",
        event_data='{"reason": "token"}',
    )  # fmt: skip
    assert await producer.complete_many([suspend]) == [True]
    assert raw.state(job_id) == "waiting"

    async def act() -> None:
        done = await producer.complete_token(TokenCompletion("tk", '{"ok": 1}', NOW + 5))
        assert done.completed and done.resumed

    handed = await wait_while(raw, worker, standing(now=NOW + 5), act)
    assert ids(handed) == [job_id]
    [job] = handed
    assert (job.token, job.attempts, job.name) == ("stand", claimed.attempts, "approve")
    row = raw.job(job_id)
    assert (row["state"], row["lease_token"], row["wait_token"]) == ("running", "stand", "")
    assert float(row["run_at"]) == NOW + 5
    assert raw.client.zscore(raw.keys.fixed("wait"), str(job_id)) is None
    types = [e.type for e in await worker.get_events(job_id)]
    assert types[-3:] == ["waiting", "resumed", "started"]
    assert await worker.counts(None) == {**dict.fromkeys(map(str, JobState), 0), "running": 1}

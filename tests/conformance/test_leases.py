"""Leases: heartbeats keep slow jobs, expired leases are rescued (a stall: ``stalled``,
no attempt used up, see test_stalls.py), stale tokens are fenced off, abort abandons
jobs for rescue."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest

import conveyor
from conveyor import JobState
from conveyor.backends.base import ClaimParams, HeartbeatParams, Outcome, ProgressUpdate
from conveyor.testing import ManualClock
from tests.conformance._util import T0, Events, running, wait_state
from tests.conftest import wait_for

FAST = {"lease": 1.0, "heartbeat_interval": 0.2, "sweep_interval": 0.1, "poll_interval": 0.1}


async def _claim(
    queue: conveyor.Queue, token: str, now: float, lease: float = 2.0, worker: str = "w"
) -> list:
    backend = await queue.engine.backend()
    return await backend.claim(
        ClaimParams(worker_id=worker, token=token, limit=10, now=now, lease_expires_at=now + lease)
    )


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_heartbeat_keeps_a_slow_job_from_being_rescued(store, sync: bool) -> None:
    runs: list[int] = []
    q1, q2 = store.queue(**FAST), store.queue(**FAST)  # two "processes"
    for q in (q1, q2):
        if sync:

            @q.job("slow")
            def slow_sync(payload: object, ctx: conveyor.Context) -> str:
                runs.append(ctx.attempt)
                time.sleep(1.8)  # more than two leases, blocking its thread
                return "done"
        else:

            @q.job("slow")
            async def slow(payload: object, ctx: conveyor.Context) -> str:
                runs.append(ctx.attempt)
                await asyncio.sleep(1.8)  # more than two leases
                return "done"

    await q1.migrate()
    await q2.migrate()
    job_id = await q1.enqueue("slow")
    async with running(q1.worker()), running(q2.worker()):
        job = await wait_state(q1, job_id, JobState.COMPLETED, JobState.FAILED, timeout=15)
    assert job.state is JobState.COMPLETED
    assert runs == [1]
    assert job.attempts == 1
    assert job.errors == ()
    assert "stalled" not in [e.type for e in await q1.get_job_events(job_id)]


async def test_expired_lease_is_rescued_as_a_stall(cq: conveyor.Queue, clock: ManualClock) -> None:
    events = Events(cq)
    attempts: list[int] = []

    @cq.job("rescued", attempts=3)
    async def rescued(payload: object, ctx: conveyor.Context) -> int:
        attempts.append(ctx.attempt)
        return ctx.attempt

    job_id = await rescued.enqueue()
    (claimed,) = await _claim(cq, "dead-worker-token", clock.now())
    assert claimed.id == job_id and claimed.attempts == 1
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.RUNNING and job.attempts == 1

    clock.advance(1.9)  # lease (2 s) not expired yet
    await cq.run_maintenance()
    assert (await cq.get_job(job_id)).state is JobState.RUNNING  # type: ignore[union-attr]

    clock.advance(0.2)
    await cq.run_maintenance()
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.state is JobState.QUEUED
    assert (job.attempts, job.stalls) == (1, 1)  # a run started, and its worker died
    assert job.last_error is not None and job.last_error["type"] == "LeaseExpired"
    assert job.last_error["attempt"] == 1
    stored = await cq.get_job_events(job_id)
    assert [e.type for e in stored] == ["enqueued", "started", "stalled"]
    assert stored[-1].attempt == 1
    assert [(e.type, e.job_id) for e in events.of("stalled")] == [("stalled", job_id)]

    assert await cq.worker().run_once() == 1
    assert attempts == [2]
    job = await cq.get_job(job_id)
    assert (
        job is not None
        and job.state is JobState.COMPLETED
        and job.attempts == 2
        and job.stalls == 1
        and job.result == 2
    )


async def test_rescue_with_no_stalls_left_fails_the_job(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    """Attempts left do not matter: max_stalls bounds the rescues (an attempts=1 job
    with the default max_stalls=1 is requeued instead: test_stalls.py)."""
    events = Events(cq)
    job_id = await cq.enqueue("once", attempts=3, max_stalls=0)
    await _claim(cq, "dead", clock.now())
    clock.advance(5)
    await cq.run_maintenance()
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.FAILED
    assert (job.attempts, job.stalls) == (1, 1)
    assert job.finished_at is not None
    assert job.last_error is not None and job.last_error["type"] == "Stalled"
    assert "stalled" in [e.type for e in await cq.get_job_events(job_id)]
    assert {"stalled", "failed"} <= set(events.types(job_id))


async def test_rescue_happens_by_itself_within_lease_plus_sweep(store) -> None:
    """A worker that dies mid-job (abort: nothing written) is rescued by a live one."""
    q1, q2 = store.queue(**FAST), store.queue(**FAST)
    hold = asyncio.Event()
    started = asyncio.Event()

    @q1.job("dies")
    async def dies(payload: object, ctx: conveyor.Context) -> str:
        started.set()
        await hold.wait()
        return "first"

    @q2.job("dies")
    async def survives(payload: object, ctx: conveyor.Context) -> str:
        return f"second {ctx.attempt}"

    await q1.migrate()
    job_id = await q1.enqueue("dies", attempts=3)
    w1 = q1.worker()
    t1 = asyncio.create_task(w1.run())
    await asyncio.wait_for(started.wait(), 10)
    w1.abort()
    await asyncio.wait_for(t1, 5)
    job = await q1.get_job(job_id)
    assert job is not None and job.state is JobState.RUNNING  # abandoned: nothing was written

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with running(q2.worker()):
        job = await wait_state(q2, job_id, JobState.COMPLETED, timeout=10)
    assert loop.time() - t0 < FAST["lease"] + FAST["sweep_interval"] + 3
    assert job.result == "second 2"
    assert job.attempts == 2
    assert "stalled" in [e.type for e in await q2.get_job_events(job_id)]


async def test_abort_of_one_worker_leaves_other_workers_running(queue: conveyor.Queue) -> None:
    hold = asyncio.Event()
    entered: list[int] = []

    @queue.job("held")
    async def held(payload: object, ctx: conveyor.Context) -> None:
        entered.append(ctx.job_id)
        await hold.wait()

    @queue.job("quick")
    async def quick(payload: object, ctx: conveyor.Context) -> str:
        return "quick"

    a = queue.worker(include=["held"])
    ta = asyncio.create_task(a.run())
    async with running(queue.worker(include=["quick"])) as tb:
        await held.enqueue()
        await wait_for(lambda: entered)
        a.abort()
        await asyncio.wait_for(ta, 5)
        job_id = await quick.enqueue()
        assert (await wait_state(queue, job_id, JobState.COMPLETED)).result == "quick"
        assert not tb.done()


async def test_a_stale_token_is_fenced_off(cq: conveyor.Queue, clock: ManualClock) -> None:
    backend = await cq.engine.backend()
    job_id = await cq.enqueue("fenced", attempts=3)
    await _claim(cq, "token-A", clock.now())

    now = clock.now()
    wrong = Outcome(job_id=job_id, token="not-the-token", state=JobState.COMPLETED, at=now, event="completed",
                    result=json.dumps("wrong"))  # fmt: skip
    assert await backend.complete_many([wrong]) == [False]
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.RUNNING and job.result is None

    # The lease of A expires and the job is rescued, then claimed again under token B.
    clock.advance(3)
    await cq.run_maintenance()
    (again,) = await _claim(cq, "token-B", clock.now())
    assert again.attempts == 2

    # A comes back: every write under its token is rejected and changes nothing.
    hb = await backend.heartbeat(
        HeartbeatParams(
            jobs=[(job_id, "token-A")], now=clock.now(), lease_expires_at=clock.now() + 100
        )
    )
    assert job_id in hb.lost
    assert await backend.set_progress(ProgressUpdate(job_id, "token-A", 99, clock.now())) is False
    stale = [
        Outcome(job_id=job_id, token="token-A", state=JobState.COMPLETED, at=clock.now(), event="completed",
                result=json.dumps("from A")),
        Outcome(job_id=job_id, token="token-A", state=JobState.FAILED, at=clock.now(), event="failed",
                error=json.dumps({"attempt": 1, "type": "X", "message": "m", "traceback": None, "at": "x"})),
        Outcome(job_id=job_id, token="token-A", state=JobState.QUEUED, at=clock.now(), event="retrying",
                run_at=clock.now(), refund_attempt=True),
    ]  # fmt: skip
    assert await backend.complete_many(stale) == [False, False, False]
    job = await cq.get_job(job_id)
    assert job is not None
    assert job.state is JobState.RUNNING
    assert job.attempts == 2
    assert job.progress == 0
    assert [e["type"] for e in job.errors] == ["LeaseExpired"]

    # The rescued run (token B) is the one that stands.
    good = Outcome(job_id=job_id, token="token-B", state=JobState.COMPLETED, at=clock.now(), event="completed",
                   result=json.dumps("from B"))  # fmt: skip
    assert await backend.complete_many([good]) == [True]
    assert await backend.complete_many([good]) == [False]  # not twice
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.COMPLETED and job.result == "from B"
    assert [e.type for e in await cq.get_job_events(job_id)].count("completed") == 1


async def test_a_rescue_outcome_needs_an_expired_lease(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    backend = await cq.engine.backend()
    job_id = await cq.enqueue("live")
    await _claim(cq, "tok", clock.now(), lease=30)
    rescue = Outcome(job_id=job_id, token="tok", state=JobState.QUEUED, at=clock.now(), event="stalled",
                     run_at=clock.now(), expired_before=clock.now())  # fmt: skip
    assert await backend.complete_many([rescue]) == [False]
    assert (await cq.get_job(job_id)).state is JobState.RUNNING  # type: ignore[union-attr]


async def test_heartbeat_renews_only_matching_tokens(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    backend = await cq.engine.backend()
    a = await cq.enqueue("a", attempts=2)
    b = await cq.enqueue("b", attempts=2)
    await _claim(cq, "tok", clock.now(), lease=2)
    result = await backend.heartbeat(
        HeartbeatParams(
            jobs=[(a, "tok"), (b, "other")], now=clock.now(), lease_expires_at=clock.now() + 60
        )
    )
    assert result.lost == frozenset({b})
    clock.advance(10)  # past the original lease, within the renewed one for a only
    await cq.run_maintenance()
    assert (await cq.get_job(a)).state is JobState.RUNNING  # type: ignore[union-attr]
    assert (await cq.get_job(b)).state is JobState.QUEUED  # type: ignore[union-attr]


async def test_a_worker_that_lost_its_lease_does_not_overwrite_the_rescue(store) -> None:
    """Worker A is "paused" past its lease (its clock lags); B rescues and completes the
    job; when A's handler finally returns, its outcome is rejected."""
    clock_a = ManualClock(T0)
    clock_b = ManualClock(T0 + timedelta(seconds=30))
    settings = {
        "lease": 2.0,
        "heartbeat_interval": 0.2,
        "sweep_interval": 60.0,
        "poll_interval": 0.1,
    }
    qa = store.queue(clock=clock_a, **settings)
    qb = store.queue(clock=clock_b, **settings)
    release = asyncio.Event()
    entered = asyncio.Event()
    a_finished = asyncio.Event()

    @qa.job("contested", attempts=3)
    async def in_a(payload: object, ctx: conveyor.Context) -> str:
        entered.set()
        try:
            await release.wait()
            return "A"
        finally:
            a_finished.set()

    @qb.job("contested", attempts=3)
    async def in_b(payload: object, ctx: conveyor.Context) -> str:
        return "B"

    await qa.migrate()
    job_id = await qa.enqueue("contested")
    async with running(qa.worker()):
        await asyncio.wait_for(entered.wait(), 10)
        await qb.run_maintenance()  # by B's clock, A's lease expired long ago
        job = await qb.get_job(job_id)
        assert job is not None and job.state is JobState.QUEUED and job.attempts == 1
        assert await qb.worker().run_once() == 1
        release.set()
        await asyncio.wait_for(a_finished.wait(), 10)
    job = await qb.get_job(job_id)
    assert job is not None
    assert job.state is JobState.COMPLETED
    assert job.result == "B"
    assert job.attempts == 2
    assert [e.type for e in await qb.get_job_events(job_id)].count("completed") == 1


async def test_a_cancel_requested_before_the_worker_died_ends_cancelled(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    job_id = await cq.enqueue("doomed", attempts=5)
    await _claim(cq, "dead", clock.now())
    assert await cq.cancel(job_id) is True  # running: the (dead) worker is asked to stop
    clock.advance(3)
    await cq.run_maintenance()
    job = await cq.get_job(job_id)
    assert job is not None and job.state is JobState.CANCELLED
    assert await cq.worker().run_once() == 0  # not run again


async def test_a_rescued_group_member_frees_its_group_and_runs_again(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    ran: list[tuple[str, int]] = []

    @cq.job("gm", attempts=3)
    async def gm(payload: str, ctx: conveyor.Context) -> None:
        ran.append((payload, ctx.attempt))

    first = await gm.enqueue("first", group="g")
    await gm.enqueue("second", group="g")
    await _claim(cq, "dead", clock.now())
    clock.advance(3)
    assert await cq.worker(concurrency=1).run_once() == 2
    assert sorted(ran) == [("first", 2), ("second", 1)]
    assert (await cq.get_job(first)).attempts == 2  # type: ignore[union-attr]


async def test_concurrent_rescues_count_the_stall_once(store, clock: ManualClock) -> None:
    queues = [store.queue(clock=clock) for _ in range(5)]
    await queues[0].migrate()
    job_id = await queues[0].enqueue("stuck", attempts=3)
    await _claim(queues[0], "dead", clock.now())
    clock.advance(5)
    await asyncio.gather(*(q.run_maintenance() for q in queues))
    job = await queues[0].get_job(job_id)
    assert job is not None and job.state is JobState.QUEUED and job.attempts == 1
    assert job.stalls == 1
    assert len(job.errors) == 1
    assert [e.type for e in await queues[0].get_job_events(job_id)].count("stalled") == 1

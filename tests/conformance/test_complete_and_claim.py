"""``Backend.complete_and_claim``: the worker's steady-state cycle in one round trip.

It applies fenced outcomes exactly like ``complete_many`` and then claims exactly like
``claim``. The claim may or may not see what the outcomes changed; a job they requeued
or a group they freed is then either claimed by this very call or, at the latest, by
the claim that follows a ``wait_for_work`` that returns at once.
"""

from __future__ import annotations

import asyncio
import json

import pytest

import conveyor
from conveyor import JobState
from conveyor.backends.base import Backend, ClaimedJob, ClaimParams, Outcome
from conveyor.testing import ManualClock


def _params(
    clock: ManualClock, token: str, limit: int = 10, include: tuple[str, ...] | None = None
) -> ClaimParams:
    now = clock.now()
    return ClaimParams(
        worker_id="w",
        token=token,
        limit=limit,
        now=now,
        lease_expires_at=now + 30,
        include=include,
    )


def _ids(jobs: list[ClaimedJob]) -> list[int]:
    return [j.id for j in jobs]


async def _claimed_now_or_after_wake(
    backend: Backend, clock: ManualClock, job_id: int, claimed: list[ClaimedJob]
) -> ClaimedJob:
    """The job is among ``claimed``, or a wait returns at once and the next claim has it."""
    jobs = list(claimed)
    if job_id not in _ids(jobs):
        await asyncio.wait_for(backend.wait_for_work(30), 5)
        jobs += await backend.claim(_params(clock, "next"))
    [job] = [j for j in jobs if j.id == job_id]
    return job


async def test_outcomes_are_applied_fenced_then_due_jobs_are_claimed(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    backend = await cq.engine.backend()
    a = await cq.enqueue("a", {"n": 1}, priority=0)
    b = await cq.enqueue("b", {"n": 2}, priority=1)
    c = await cq.enqueue("c", {"n": 3}, priority=2, tags=["x"])
    d = await cq.enqueue("d", {"n": 4}, priority=3)
    assert _ids(await backend.claim(_params(clock, "t1", limit=2))) == [a, b]

    now = clock.now()
    outcomes = [
        Outcome(job_id=a, token="t1", state=JobState.COMPLETED, at=now, event="completed",
                result=json.dumps({"ok": True})),
        Outcome(job_id=b, token="not-t1", state=JobState.FAILED, at=now, event="failed",
                error=json.dumps({"attempt": 1, "type": "X", "message": "m", "traceback": None,
                                  "at": "x"})),
    ]  # fmt: skip
    applied, claimed = await backend.complete_and_claim(outcomes, _params(clock, "t2", limit=1))

    assert applied == [True, False]
    [job] = claimed  # the limit holds; order is priority, then run_at, then id
    assert (job.id, job.name, job.attempts, job.token) == (c, "c", 1, "t2")
    assert json.loads(job.payload) == {"n": 3}
    assert job.tags == ("x",) and job.max_attempts == 1 and job.channel == "default"

    done = await cq.get_job(a)
    assert done is not None and done.state is JobState.COMPLETED and done.result == {"ok": True}
    fenced = await cq.get_job(b)  # the stale token changed nothing
    assert fenced is not None and fenced.state is JobState.RUNNING and fenced.errors == ()
    running = await cq.get_job(c)
    assert running is not None and running.state is JobState.RUNNING and running.attempts == 1
    waiting = await cq.get_job(d)
    assert waiting is not None and waiting.state is JobState.QUEUED
    assert [e.type for e in await cq.get_job_events(c)] == ["enqueued", "started"]

    # the claim's token holds the lease: its outcome applies, once
    finish = Outcome(job_id=c, token="t2", state=JobState.COMPLETED, at=clock.now(),
                     event="completed")  # fmt: skip
    applied, claimed = await backend.complete_and_claim([finish], _params(clock, "t3"))
    assert applied == [True] and _ids(claimed) == [d]
    applied, claimed = await backend.complete_and_claim([finish], _params(clock, "t4"))
    assert applied == [False] and claimed == []
    assert (await cq.counts())["completed"] == 2


async def test_without_outcomes_it_is_a_claim(cq: conveyor.Queue, clock: ManualClock) -> None:
    backend = await cq.engine.backend()
    assert await backend.complete_and_claim([], _params(clock, "t0")) == ([], [])
    job_id = await cq.enqueue("only")
    applied, claimed = await backend.complete_and_claim([], _params(clock, "t1"))
    assert applied == [] and _ids(claimed) == [job_id]
    assert claimed[0].attempts == 1 and claimed[0].token == "t1"


@pytest.mark.parametrize("limit", [0, 1])
async def test_a_requeued_job_is_claimed_now_or_after_a_wake(
    cq: conveyor.Queue, clock: ManualClock, limit: int
) -> None:
    backend = await cq.engine.backend()
    job_id = await cq.enqueue("again", attempts=3)
    [first] = await backend.claim(_params(clock, "t1"))
    await backend.wait_for_work(0.01)  # consume the enqueue's own wake-up
    requeue = Outcome(job_id=job_id, token="t1", state=JobState.QUEUED, at=clock.now(),
                      event="retrying", run_at=clock.now(), refund_attempt=True)  # fmt: skip

    applied, claimed = await backend.complete_and_claim([requeue], _params(clock, "t2", limit))

    assert applied == [True]
    assert len(claimed) <= limit
    again = await _claimed_now_or_after_wake(backend, clock, job_id, claimed)
    assert again.attempts == first.attempts  # the drained attempt was given back


async def test_a_freed_group_is_claimed_now_or_after_a_wake(
    cq: conveyor.Queue, clock: ManualClock
) -> None:
    backend = await cq.engine.backend()
    first = await cq.enqueue("member", group="account-1")
    second = await cq.enqueue("member", group="account-1")
    assert _ids(await backend.claim(_params(clock, "t1"))) == [first]  # the group is busy
    await backend.wait_for_work(0.01)  # consume the enqueues' own wake-ups
    done = Outcome(job_id=first, token="t1", state=JobState.COMPLETED, at=clock.now(),
                   event="completed")  # fmt: skip

    # this claim takes only other names, so the freed member waits for the next claim
    applied, claimed = await backend.complete_and_claim(
        [done], _params(clock, "t2", include=("other",))
    )

    assert applied == [True] and claimed == []
    job = await _claimed_now_or_after_wake(backend, clock, second, claimed)
    assert job.group == "account-1" and job.attempts == 1

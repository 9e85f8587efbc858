"""``Backend.wait_for_work(timeout, claim)``: a wait may carry the caller's claim.

A backend that can hand jobs over (Redis) claims due jobs for the waiting caller while it
waits, as ``claim(claim)`` would when they arrive, and returns them; the others return
``[]`` and the caller claims. Either way every job is claimed exactly once, under
the filters, pauses and groups a claim honours, and a wait still ends on ``wake()``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import conveyor
from conveyor import JobSpec, JobState
from conveyor.backends.base import Backend, ClaimedJob, ClaimParams, Outcome
from conveyor.testing import ManualClock
from tests.conformance._raw import standing_claims
from tests.conftest import Store, wait_for


def _claim(clock: ManualClock, token: str, limit: int = 10, **kw: Any) -> ClaimParams:
    now = clock.now()
    return ClaimParams(
        worker_id="w", token=token, limit=limit, now=now, lease_expires_at=now + 30, **kw
    )


async def _wait_while(
    store: Store, backend: Backend, claim: ClaimParams, act: Callable[[], Awaitable[Any]]
) -> list[ClaimedJob]:
    """Start a wait carrying ``claim``, do ``act`` once it stands, return what it returns."""
    waiting = asyncio.create_task(backend.wait_for_work(30, claim))
    if store.backend == "redis":  # let the standing claim be in place first
        await wait_for(lambda: standing_claims(store) == 1 or waiting.done())
    await act()
    return await asyncio.wait_for(waiting, 5)


async def _settle(backend: Backend) -> None:
    """Consume wake-ups left by earlier steps (a wait then returns at once)."""
    await backend.wait_for_work(0.01)


async def test_jobs_returned_by_a_wait_are_claimed_under_its_claim(
    cq: conveyor.Queue, store: Store, clock: ManualClock
) -> None:
    backend = await cq.engine.backend()
    await _settle(backend)
    ids: list[int] = []

    async def enqueue() -> None:
        ids.extend(
            await cq.enqueue_many(
                [JobSpec("c", priority=2), JobSpec("a", priority=0), JobSpec("b", priority=1)]
            )
        )

    handed = await _wait_while(store, backend, _claim(clock, "stand", limit=2), enqueue)
    _, a, b = ids
    assert len(handed) <= 2
    assert [j.id for j in handed] == [a, b][: len(handed)]  # in claim order
    rest = await backend.claim(_claim(clock, "next"))
    assert sorted(j.id for j in handed + rest) == sorted(ids)  # each exactly once
    for job in handed:
        assert job.token == "stand" and job.attempts == 1 and job.payload == "null"
        stored = await cq.get_job(job.id)
        assert stored is not None and stored.state is JobState.RUNNING
        assert stored.attempts == 1 and stored.started_at == clock.datetime
        assert [e.type for e in await cq.get_job_events(job.id)] == ["enqueued", "started"]
    # the claim's token holds their leases: fenced writes with it apply, others do not
    now = clock.now()
    done = [Outcome(j.id, "stand", JobState.COMPLETED, now, "completed") for j in handed]
    stale = [Outcome(j.id, "other", JobState.COMPLETED, now, "completed") for j in handed]
    assert await backend.complete_many(stale) == [False] * len(handed)
    assert await backend.complete_many(done) == [True] * len(handed)
    assert (await cq.counts())["running"] == len(rest)
    assert standing_claims(store) == 0


async def test_a_wait_takes_only_what_its_claim_would(
    cq: conveyor.Queue, store: Store, clock: ManualClock
) -> None:
    backend = await cq.engine.backend()
    busy = await cq.enqueue("member", group="g")
    [running] = await backend.claim(_claim(clock, "t0", include=("member",)))
    assert running.id == busy
    await cq.pause("paused")
    await _settle(backend)
    ids: list[int] = []

    async def enqueue() -> None:
        ids.extend(
            await cq.enqueue_many(
                [
                    JobSpec("x", channel="other"),  # not one of the claim's channels
                    JobSpec("y", channel="a"),  # excluded by name
                    JobSpec("x", channel="paused"),  # its channel is paused
                    JobSpec("member", channel="a", group="g"),  # its group is busy
                    JobSpec("x", channel="a"),  # the only one it may take
                ]
            )
        )

    claim = _claim(clock, "stand", channels=("a", "paused"), exclude=("y",))
    handed = await _wait_while(store, backend, claim, enqueue)
    wanted = ids[4]
    assert [j.id for j in handed] in ([], [wanted])
    rest = await backend.claim(_claim(clock, "next", channels=("a", "paused"), exclude=("y",)))
    assert [j.id for j in handed + rest] == [wanted]
    for job_id in ids[:4]:
        job = await cq.get_job(job_id)
        assert job is not None and job.state is JobState.QUEUED


async def test_a_paused_queue_hands_nothing_over(
    cq: conveyor.Queue, store: Store, clock: ManualClock
) -> None:
    backend = await cq.engine.backend()
    await cq.pause()
    await _settle(backend)
    ids: list[int] = []

    async def enqueue() -> None:
        ids.append(await cq.enqueue("x"))

    assert await _wait_while(store, backend, _claim(clock, "stand"), enqueue) == []
    assert await backend.claim(_claim(clock, "next")) == []
    await cq.resume()
    assert [j.id for j in await backend.claim(_claim(clock, "next"))] == ids


async def test_a_wait_with_a_claim_times_out_or_wakes_with_nothing(
    cq: conveyor.Queue, store: Store, clock: ManualClock
) -> None:
    backend = await cq.engine.backend()
    await _settle(backend)
    assert await backend.wait_for_work(0.05, _claim(clock, "quiet")) == []

    async def wake_from_another_thread() -> None:
        thread = threading.Thread(target=backend.wake)
        thread.start()
        thread.join()

    handed = await _wait_while(store, backend, _claim(clock, "woken"), wake_from_another_thread)
    assert handed == []
    assert standing_claims(store) == 0
    # nothing stands any more: a job enqueued now is simply queued, for the next claim
    job_id = await cq.enqueue("later")
    assert [j.id for j in await backend.claim(_claim(clock, "next"))] == [job_id]

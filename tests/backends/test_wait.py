"""wait_for_work and wake: the timeout, wake-ups from any thread, and the hand-off of due
jobs to a standing claim (on the stores that hand over)."""

from __future__ import annotations

import asyncio
import threading
import time

from conveyor.backends.base import Backend, ClaimedJob, ClaimParams, HeartbeatParams, NewJob
from tests.backends.conftest import Store
from tests.backends.helpers import (
    NOW,
    claim_ids,
    claim_params,
    elapsed,
    enqueue,
    finish,
    get,
    new_job,
    quiet,
    state_of,
    ts,
)

AT_ONCE = 5.0  # seconds that count as "at once" for a wait of 30 (a loaded CI box)


async def test_returns_nothing_after_the_timeout(backend: Backend) -> None:
    result, took = await elapsed(backend.wait_for_work(0.3))
    assert result == []
    assert took < AT_ONCE
    result, took = await elapsed(backend.wait_for_work(0))
    assert (result, took < AT_ONCE) == ([], True)


async def test_a_wake_before_the_wait_ends_the_next_wait(backend: Backend) -> None:
    await backend.wait_for_work(0)  # let a backend start whatever it listens with
    backend.wake()
    result, took = await elapsed(backend.wait_for_work(30))
    assert result == []
    assert took < AT_ONCE


async def test_a_wake_from_another_thread_ends_the_current_wait(backend: Backend) -> None:
    await backend.wait_for_work(0)
    waiting = asyncio.create_task(elapsed(backend.wait_for_work(30)))
    for _ in range(5):
        await asyncio.sleep(0)  # let the wait begin (if it has not, it is the "next" one)
    thread = threading.Thread(target=backend.wake)
    thread.start()
    thread.join(10)
    result, took = await asyncio.wait_for(waiting, 30)
    assert result == []
    assert took < AT_ONCE


async def test_a_standing_claim_on_an_empty_queue_returns_nothing(backend: Backend) -> None:
    result = await backend.wait_for_work(0.3, claim_params(token="stand"))
    assert result == []
    assert sum((await backend.counts(None)).values()) == 0


async def _round(
    backend: Backend, claim: ClaimParams, *jobs: NewJob, timeout: float = 5.0
) -> tuple[list[ClaimedJob], list[int]]:
    """Wait with ``claim`` while ``jobs`` are enqueued: (what the wait returned, the ids)."""
    waiting = asyncio.create_task(backend.wait_for_work(timeout, claim))
    for _ in range(5):
        await asyncio.sleep(0)  # let the wait register (if it has not, nothing is handed)
    ids = await enqueue(backend, *jobs)
    return await asyncio.wait_for(waiting, timeout + 30), ids


async def _check_handed(backend: Backend, handed: list[ClaimedJob], claim: ClaimParams) -> None:
    """Each handed job is claimed exactly as a claim would: running, attempts + 1, under
    the claim's token, a started event, and a lease of the claim's length from then."""
    length = claim.lease_expires_at - claim.now
    for job in handed:
        assert (job.token, job.attempts, job.stalls) == (claim.token, 1, 0)
        stored = await get(backend, job.id)
        assert (stored.state, stored.attempts) == ("running", 1)
        started = ts(stored.started_at)
        assert started is not None
        assert "started" in [e.type for e in await backend.get_events(job.id)]
        leases = await backend.expired_leases(started + length - 0.5, 100)
        assert job.id not in {e.id for e in leases}
        leases = await backend.expired_leases(started + length + 0.001, 100)
        assert [(e.id, e.token) for e in leases if e.id == job.id] == [(job.id, claim.token)]


async def test_a_standing_claim_gets_due_jobs_handed_over(backend: Backend, store: Store) -> None:
    claim = claim_params(token="stand", limit=2, lease=40)
    deadline = time.monotonic() + 20
    rounds = 0
    while True:
        rounds += 1
        batch = (
            new_job(f"c{rounds}", priority=2),
            new_job(f"a{rounds}", priority=0, max_stalls=4),
            new_job(f"b{rounds}", priority=1),
        )
        handed, (c, a, b) = await _round(backend, claim, *batch)
        if not store.hands_off:
            assert handed == []  # SQLite and PostgreSQL: the caller claims
            assert [await state_of(backend, i) for i in (a, b, c)] == ["queued"] * 3
            return
        if handed:
            break
        # The wait ended before the hand-off (it was not registered yet): the jobs are
        # queued, untouched. Cancel them and try again.
        for job_id in (a, b, c):
            assert (await get(backend, job_id)).attempts == 0
            assert await backend.cancel(job_id, NOW) == "cancelled"
        assert time.monotonic() < deadline, f"{store.kind}: no hand-off in {rounds} rounds"
    # at most claim.limit, never ahead of a job a claim would take first
    assert [j.id for j in handed] in ([a], [a, b])
    assert (handed[0].name, handed[0].max_stalls) == (f"a{rounds}", 4)
    await _check_handed(backend, handed, claim)
    assert await state_of(backend, c) == "queued"
    for job in handed:
        await finish(backend, job.id, "stand")  # the caller runs them like claimed jobs


async def test_a_hand_off_follows_filters_pauses_groups_and_order(backend: Backend) -> None:
    [group_runs] = await enqueue(backend, new_job("g-running", channel="a", group="g"))
    assert await claim_ids(backend, token="other") == [group_runs]
    await backend.set_paused("paused", True)
    [first] = await enqueue(backend, new_job("first", channel="a"))
    claim = claim_params(
        token="stand", limit=2, lease=40, channels=("a", "paused"), exclude=("skip",)
    )
    handed, (elsewhere, excluded, paused, grouped, late) = await _round(
        backend,
        claim,
        new_job("elsewhere", channel="b"),  # not the claim's channel
        new_job("skip", channel="a"),  # an excluded name
        new_job("paused", channel="paused"),  # a paused channel
        new_job("grouped", channel="a", group="g", priority=-5),  # its group is running
        new_job("late", channel="a", priority=5),  # behind `first`
        timeout=1.0,
    )
    got = [j.id for j in handed]
    assert got in ([], [first], [first, late]), "handed ahead of a job a claim takes first"
    await _check_handed(backend, handed, claim)
    for job_id in (first, late, elsewhere, excluded, paused, grouped):
        if job_id not in got:
            job = await get(backend, job_id)
            assert (job.state, job.attempts) == ("queued", 0), f"job {job_id} was touched"


async def test_a_cancelled_wait_loses_no_hand_off(backend: Backend) -> None:
    claim = claim_params(token="stand", limit=3, lease=40)
    waiting = asyncio.create_task(backend.wait_for_work(5, claim))
    for _ in range(5):
        await asyncio.sleep(0)
    ids = await enqueue(backend, new_job("x"), new_job("y"))
    waiting.cancel()
    try:
        received = await waiting
    except asyncio.CancelledError:
        received = []
    # whatever was stored as running under the claim's token and not received ...
    beat = await backend.heartbeat(HeartbeatParams([(i, "stand") for i in ids], NOW, NOW + 40))
    held = set(ids) - beat.lost - {j.id for j in received}
    # ... a later wait with the same claim returns while the lease holds
    later = await backend.wait_for_work(1.0, claim) if held else []
    assert held <= {j.id for j in later}
    for job_id in set(ids) - beat.lost:
        assert (await get(backend, job_id)).state == "running"
    for job_id in beat.lost:
        assert (await get(backend, job_id)).state == "queued"


async def test_an_enqueue_elsewhere_ends_the_wait(backend: Backend, store: Store) -> None:
    """ "Return when new work may be due (notification)": a job enqueued by another
    instance (process) ends a wait long before its timeout."""
    producer = await store.connected()
    deadline = time.monotonic() + 20
    while True:
        await quiet(backend)  # also starts whatever the backend listens with
        waiting = asyncio.create_task(elapsed(backend.wait_for_work(3)))
        for _ in range(5):
            await asyncio.sleep(0)
        await enqueue(producer, new_job())
        result, took = await asyncio.wait_for(waiting, 30)
        assert result == []  # no standing claim: nothing is handed over
        if took < 2:
            return
        # the listener may not have been ready for this one: try again, within reason
        assert time.monotonic() < deadline, "an enqueue by another instance never woke the wait"

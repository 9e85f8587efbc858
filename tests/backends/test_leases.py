"""What a worker does while a job runs: heartbeat, cancel_requests, set_progress; and the
lease side of maintenance: expired_leases."""

from __future__ import annotations

from conveyor.backends.base import Backend, ExpiredLease, HeartbeatParams, ProgressUpdate
from conveyor.models import JobState
from tests.backends.helpers import (
    NOW,
    claim,
    claim_ids,
    enqueue,
    event_types,
    finish,
    get,
    new_job,
)


def beat(*jobs: tuple[int, str], now: float, until: float) -> HeartbeatParams:
    return HeartbeatParams(jobs=list(jobs), now=now, lease_expires_at=until)


async def expired_ids(backend: Backend, now: float) -> set[int]:
    return {lease.id for lease in await backend.expired_leases(now, 100)}


async def test_a_heartbeat_extends_the_lease(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())
    await claim(backend, token="t", lease=30)
    result = await backend.heartbeat(beat((job_id, "t"), now=NOW + 20, until=NOW + 50))
    assert (result.lost, result.cancel_requested) == (frozenset(), frozenset())
    assert await expired_ids(backend, NOW + 49.5) == set()
    assert await expired_ids(backend, NOW + 50) == {job_id}
    job = await get(backend, job_id)
    assert (job.state, job.attempts) == ("running", 1)  # a heartbeat is not an attempt


async def test_a_heartbeat_after_expiry_but_before_rescue_still_holds(backend: Backend) -> None:
    """Lost means "no longer running under that token", not "lease passed"."""
    [job_id] = await enqueue(backend, new_job())
    await claim(backend, token="t", lease=30)
    result = await backend.heartbeat(beat((job_id, "t"), now=NOW + 40, until=NOW + 70))
    assert result.lost == frozenset()
    assert await expired_ids(backend, NOW + 69) == set()


async def test_lost_jobs_are_reported_and_not_extended(backend: Backend) -> None:
    held, stolen, done, queued = await enqueue(
        backend, new_job(), new_job(), new_job(), new_job(channel="later")
    )
    assert await claim_ids(backend, token="t", channels=("default",)) == [held, stolen, done]
    await finish(
        backend,
        stolen,
        "t",
        state=JobState.QUEUED,
        run_at=NOW + 31,
        at=NOW + 31,
        event="stalled",
        expired_before=NOW + 31,
    )
    assert await claim_ids(backend, token="rescuer", now=NOW + 31, channels=("default",)) == [
        stolen
    ]
    await finish(backend, done, "t")
    result = await backend.heartbeat(
        beat(
            (held, "t"),
            (stolen, "t"),  # running, but under another token now
            (done, "t"),  # finished
            (queued, "t"),  # never claimed
            (987_654, "t"),  # no such job
            now=NOW + 32,
            until=NOW + 62,
        )
    )
    assert result.lost == frozenset({stolen, done, queued, 987_654})
    assert result.cancel_requested == frozenset()
    # the rescuer's lease (NOW + 31 + 30) was not moved by the stale heartbeat
    # and the live one's lease moved to NOW + 62
    assert await expired_ids(backend, NOW + 61) == {stolen}
    assert await expired_ids(backend, NOW + 62) == {stolen, held}


async def test_an_empty_heartbeat(backend: Backend) -> None:
    result = await backend.heartbeat(beat(now=NOW, until=NOW + 30))
    assert (result.lost, result.cancel_requested) == (frozenset(), frozenset())


async def test_cancel_requested_is_reported(backend: Backend) -> None:
    a, b = await enqueue(backend, new_job(), new_job())
    await claim(backend, token="t")
    assert await backend.cancel(a, NOW + 1) == "requested"
    result = await backend.heartbeat(beat((a, "t"), (b, "t"), now=NOW + 2, until=NOW + 40))
    assert (result.lost, result.cancel_requested) == (frozenset(), frozenset({a}))
    assert await expired_ids(backend, NOW + 39) == set()  # still extended


async def test_cancel_requests_reads_the_flags(backend: Backend) -> None:
    a, b, queued = await enqueue(backend, new_job(), new_job(), new_job(channel="x"))
    await claim(backend, token="t", channels=("default",))
    assert await backend.cancel_requests([a, b, queued, 424_242]) == frozenset()
    await backend.cancel(a, NOW)
    assert await backend.cancel_requests([a, b, queued, 424_242]) == frozenset({a})
    assert await backend.cancel_requests([b]) == frozenset()
    assert await backend.cancel_requests([]) == frozenset()
    # read-only: asking changes nothing
    job = await get(backend, a)
    assert (job.state, job.attempts) == ("running", 1)
    assert await backend.cancel_requests([a]) == frozenset({a})


async def test_set_progress_is_fenced(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())
    await claim(backend, token="t")
    assert await backend.set_progress(ProgressUpdate(job_id, "t", 40, NOW + 1)) is True
    assert (await get(backend, job_id)).progress == 40
    progress = [e for e in await backend.get_events(job_id) if e.type == "progress"]
    assert len(progress) == 1 and progress[0].job_id == job_id and progress[0].attempt == 1

    assert await backend.set_progress(ProgressUpdate(job_id, "stale", 90, NOW + 2)) is False
    assert (await get(backend, job_id)).progress == 40
    assert (await event_types(backend, job_id)).count("progress") == 1

    await finish(backend, job_id, "t")
    before = await get(backend, job_id)
    assert await backend.set_progress(ProgressUpdate(job_id, "t", 77, NOW + 3)) is False
    assert await get(backend, job_id) == before
    assert await backend.set_progress(ProgressUpdate(31_337, "t", 1, NOW)) is False


async def test_set_progress_on_an_upcoming_job_is_refused(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())
    assert await backend.set_progress(ProgressUpdate(job_id, "t", 50, NOW)) is False
    assert (await get(backend, job_id)).progress == 0


async def test_expired_leases_lists_running_jobs_past_their_lease(backend: Backend) -> None:
    short, long_, other = await enqueue(
        backend,
        new_job("short", tenant="acme", max_attempts=5, max_stalls=3, options='{"timeout": 1}'),
        new_job("long"),
        new_job("other", channel="idle"),
    )
    await claim(backend, token="s", lease=10, include=("short",))
    await claim(backend, token="l", lease=100, include=("long",))
    await backend.cancel(short, NOW)
    assert await backend.expired_leases(NOW + 9.5, 10) == []
    [lease] = await backend.expired_leases(NOW + 10, 10)
    assert lease == ExpiredLease(
        id=short,
        token="s",
        name="short",
        tenant="acme",
        attempts=1,
        max_attempts=5,
        options='{"timeout": 1}',
        cancel_requested=True,
        stalls=0,
        max_stalls=3,
    )
    assert await expired_ids(backend, NOW + 1000) == {short, long_}  # never a queued job
    # read-only: listing rescues nothing
    assert (await get(backend, short)).state == "running"
    assert other not in await expired_ids(backend, NOW + 10_000)


async def test_expired_leases_carries_the_stalls_so_far(backend: Backend) -> None:
    [job_id] = await enqueue(backend, new_job())  # max_stalls: the default, 1
    await claim(backend, token="a", lease=10)
    [first] = await backend.expired_leases(NOW + 10, 10)
    assert (first.attempts, first.stalls, first.max_stalls) == (1, 0, 1)
    await finish(
        backend, job_id, "a", state=JobState.QUEUED, run_at=NOW + 10, at=NOW + 10,
        event="stalled", stall=True, expired_before=NOW + 10,
    )  # fmt: skip
    await claim(backend, token="b", now=NOW + 10, lease=10)
    [second] = await backend.expired_leases(NOW + 20, 10)
    assert (second.token, second.attempts, second.stalls, second.max_stalls) == ("b", 2, 1, 1)


async def test_expired_leases_honours_limit(backend: Backend) -> None:
    ids = await enqueue(backend, *(new_job() for _ in range(5)))
    await claim(backend, token="t", lease=5)
    assert len(await backend.expired_leases(NOW + 5, 3)) == 3
    assert {e.id for e in await backend.expired_leases(NOW + 5, 10)} == set(ids)

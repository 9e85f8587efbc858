"""A hand-off never outlives the waiter that can run it: a live worker whose connections
are killed (CLIENT KILL) while its standing claim is registered still runs the job an
enqueue hands it, once, without a rescue, also when its poll interval is longer than its
lease. (Before: its wait paused for the whole poll with its registration still standing,
the job was handed to it, nobody renewed the lease, and the rescue failed the job.)"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

import conveyor
from conveyor.backends.base import ClaimParams
from conveyor.backends.redis.backend import RedisBackend
from conveyor.errors import BackendError
from conveyor.models import JobState
from tests.conformance._util import running
from tests.integration.redis.helpers import NOW, OwnRedis, enqueue, new_job, wait_until

pytestmark = pytest.mark.slow


def _kill_normal_clients(server: OwnRedis) -> int:
    with server.client() as c:
        return int(c.client_kill_filter(_type="normal", skipme=True))


def _registered(server: OwnRedis, prefix: str) -> bool:
    from conveyor.backends.redis.keys import Keys

    with server.client() as c:
        return bool(c.hlen(Keys(prefix).waiters))


async def _settled(queue: conveyor.Queue, job_id: int, timeout: float) -> conveyor.Job:
    """The job once it finished (reads that fail on a killed connection are retried)."""

    async def check() -> conveyor.Job | None:
        try:
            job = await queue.get_job(job_id)
        except BackendError:
            return None
        return (
            job if job is not None and job.state in (JobState.COMPLETED, JobState.FAILED) else None
        )

    result: conveyor.Job = await wait_until(check, timeout, interval=0.05)
    return result


async def _eventually(call: Any, timeout: float = 10.0) -> Any:
    out: list[Any] = []

    async def attempt() -> bool:
        try:
            out.append(await call())
        except BackendError:
            return False
        return True

    await wait_until(attempt, timeout, interval=0.05)
    return out[0]


async def test_a_live_worker_whose_connections_were_killed_runs_its_hand_off(
    own_redis: OwnRedis, prefix: str
) -> None:
    worker_queue = conveyor.Queue(
        own_redis.url, prefix=prefix, lease=2, poll_interval=10, sweep_interval=0.2
    )
    producer = conveyor.Queue(own_redis.url, prefix=prefix)  # another process, in effect
    runs: list[int] = []

    @worker_queue.job("once")
    async def once(payload: None, ctx: conveyor.Context) -> str:
        runs.append(ctx.attempt)
        return "ran"

    try:
        await worker_queue.migrate()
        async with running(worker_queue.worker(concurrency=2)):
            await wait_until(lambda: _registered(own_redis, prefix))
            assert _kill_normal_clients(own_redis) >= 2
            started = time.monotonic()
            job_id = await _eventually(lambda: producer.enqueue("once", None, attempts=1))
            job = await _settled(producer, job_id, timeout=15)
            took = time.monotonic() - started
            assert job.state is JobState.COMPLETED, job.errors
            assert (runs, job.attempts, job.result) == ([1], 1, "ran")
            events = [e.type for e in await producer.get_job_events(job_id)]
            assert "stalled" not in events
            assert took < 5  # neither rescued after its lease nor picked up after the poll
    finally:
        await producer.close()
        await worker_queue.close()


# -- the mechanism, verb by verb -----------------------------------------------------------------


def _standing(token: str, lease: float = 2.0) -> ClaimParams:
    return ClaimParams(worker_id="w1", token=token, limit=5, now=NOW, lease_expires_at=NOW + lease)


async def test_a_registration_stands_at_most_half_its_lease(
    backend: RedisBackend, redis_url: str, prefix: str
) -> None:
    import redis

    from conveyor.backends.redis.keys import Keys

    keys = Keys(prefix)
    with redis.Redis.from_url(redis_url, decode_responses=True) as c:
        for lease, timeout, stands in ((2.0, 10.0, 1.0), (30.0, 1.0, 1.0)):
            await backend.wait_for_work(0.01)
            waiting = asyncio.ensure_future(backend.wait_for_work(timeout, _standing("s", lease)))
            await wait_until(lambda: c.hlen(keys.waiters))
            [registration] = c.hvals(keys.waiters)
            assert float(json.loads(registration)["x"]) == NOW + stands
            backend.wake()
            assert await asyncio.wait_for(waiting, 5) == []


async def test_a_wait_that_cannot_release_comes_back_within_the_registration(
    make_backend: Any, own_redis: OwnRedis
) -> None:
    """Its connection killed and the release failing too, a wait does not pause for the
    poll interval (here 10 s) while its registration may still stand: it is back within
    the registration's window (half the 2 s lease), and the next wait collects the job
    handed to it meanwhile, under a fresh lease."""
    worker: RedisBackend = await make_backend(own_redis.url)
    producer: RedisBackend = await make_backend(own_redis.url)
    waker: Any = worker._waker
    waker._retry_pause = 10.0  # as with poll_interval=10
    hand = waker._hand
    real_release = hand.try_release
    failing = True

    async def try_release(now: float, lease_expires_at: float | None) -> Any:
        return None if failing else await real_release(now, lease_expires_at)

    hand.try_release = try_release
    await worker.wait_for_work(0.01)
    waiting = asyncio.ensure_future(worker.wait_for_work(10, _standing("first")))
    await wait_until(lambda: _registered(own_redis, worker._settings.prefix))
    _kill_normal_clients(own_redis)
    [job_id] = await _eventually(lambda: enqueue(producer, new_job()))  # handed to "first"
    started = time.monotonic()
    assert await asyncio.wait_for(waiting, 5) == []
    assert time.monotonic() - started < 1.5
    failing = False
    [job] = await asyncio.wait_for(worker.wait_for_work(10, _standing("second", 30)), 5)
    assert (job.id, job.token) == (job_id, "first")
    row = await producer.get_job(job_id)
    assert row is not None and row.state is JobState.RUNNING
    assert await producer.expired_leases(NOW + 29, 10) == []  # renewed: NOW + 30

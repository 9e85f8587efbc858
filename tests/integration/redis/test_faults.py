"""Faults on a private redis-server: script cache flushed, connections killed, the
server restarted, an eviction policy that can lose jobs. Never the shared 6379 server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
import redis

from conveyor.backends.base import ClaimedJob, ClaimParams, EventRead
from conveyor.backends.redis.backend import RedisBackend
from conveyor.errors import BackendError
from tests.integration.redis.helpers import (
    NOW,
    OwnRedis,
    claim_params,
    enqueue,
    new_job,
    wait_until,
)

pytestmark = pytest.mark.slow


async def _eventually_ok(call: Any, timeout: float = 10.0) -> Any:
    """Retry a call that may fail with BackendError until it succeeds."""
    result: list[Any] = []

    async def attempt() -> bool:
        try:
            result.append(await call())
        except BackendError:
            return False
        return True

    await wait_until(attempt, timeout, interval=0.05)
    return result[0]


async def _blocked(server: OwnRedis) -> None:
    """Wait until a connection is blocked in the server (a wait for work, or a stream
    read, has reached Redis): what follows then acts on a call that is really waiting."""

    def check() -> bool:
        with server.client() as c:
            return int(c.info("clients")["blocked_clients"]) >= 1

    await wait_until(check, 5, interval=0.01)


async def test_script_flush_is_transparent(make_backend: Any, own_redis: OwnRedis) -> None:
    backend: RedisBackend = await make_backend(own_redis.url)
    [first] = await enqueue(backend, new_job())
    with own_redis.client() as c:
        c.script_flush()
    [second] = await enqueue(backend, new_job())  # NOSCRIPT: loaded again, run once
    assert second == first + 1
    with own_redis.client() as c:
        c.script_flush()
    assert [j.id for j in await backend.claim(claim_params())] == [first, second]


async def test_killed_connections_fail_then_recover(make_backend: Any, own_redis: OwnRedis) -> None:
    backend: RedisBackend = await make_backend(own_redis.url)
    producer: RedisBackend = await make_backend(own_redis.url)
    await enqueue(backend, new_job())
    await backend.wait_for_work(0.01)
    waiting = asyncio.ensure_future(backend.wait_for_work(1.0))
    await _blocked(own_redis)
    with own_redis.client() as c:
        killed = c.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 2
    # the next call either fails with BackendError or already works; then it works
    try:
        await backend.get_job(1)
    except BackendError:
        pass
    assert await backend.get_job(1) is not None
    await asyncio.wait_for(waiting, 5)  # the wait survives its connection being killed
    waiting = asyncio.ensure_future(backend.wait_for_work(30))
    await _blocked(own_redis)
    await _eventually_ok(lambda: enqueue(producer, new_job()))
    await asyncio.wait_for(waiting, 5)


async def test_killed_stream_reader_recovers(make_backend: Any, own_redis: OwnRedis) -> None:
    backend: RedisBackend = await make_backend(own_redis.url)
    cursor = (await backend.read_events(EventRead(None, 10, 0))).cursor
    reading = asyncio.ensure_future(backend.read_events(EventRead(cursor, 10, 30)))
    await _blocked(own_redis)
    with own_redis.client() as c:
        c.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(BackendError):
        await asyncio.wait_for(reading, 5)
    [job_id] = await _eventually_ok(lambda: enqueue(backend, new_job()))
    page = await backend.read_events(EventRead(cursor, 10, 5))
    assert [(e.type, e.job_id) for e in page.events] == [("enqueued", job_id)]


async def test_server_restart(make_backend: Any, own_redis: OwnRedis) -> None:
    backend: RedisBackend = await make_backend(own_redis.url)
    producer: RedisBackend = await make_backend(own_redis.url)
    await enqueue(backend, new_job())
    own_redis.stop()

    started = time.monotonic()
    with pytest.raises(BackendError):
        await enqueue(backend, new_job())  # never returns an id that was not stored
    with pytest.raises(BackendError):
        await backend.claim(claim_params())
    with pytest.raises(BackendError):
        await backend.get_job(1)
    await backend.wait_for_work(0.5)  # does not raise while the server is down
    assert time.monotonic() - started < 8

    own_redis.start()  # a fresh, empty server: its script cache is empty too
    [job_id] = await _eventually_ok(lambda: enqueue(backend, new_job("after")))
    [claimed] = await backend.claim(claim_params())
    assert (claimed.id, claimed.name) == (job_id, "after")
    # the worker's wake-up connection reconnects as well
    await _eventually_ok(lambda: backend.wait_for_work(0.05))
    await backend.wait_for_work(0.05)
    waiting = asyncio.ensure_future(backend.wait_for_work(30))
    await _blocked(own_redis)
    await _eventually_ok(lambda: enqueue(producer, new_job()))
    await asyncio.wait_for(waiting, 5)


async def test_maxmemory_policy_warning(
    make_backend: Any, own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    with own_redis.client() as c:
        c.config_set("maxmemory-policy", "allkeys-lru")
    with caplog.at_level(logging.WARNING, logger="conveyor"):
        await make_backend(own_redis.url)
    warnings = [r for r in caplog.records if r.name == "conveyor" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "allkeys-lru" in warnings[0].getMessage()
    assert "noeviction" in warnings[0].getMessage()

    caplog.clear()
    with own_redis.client() as c:
        c.config_set("maxmemory-policy", "noeviction")
    with caplog.at_level(logging.WARNING, logger="conveyor"):
        await make_backend(own_redis.url)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_connect_to_a_dead_server_raises_backend_error(own_redis: OwnRedis) -> None:
    from conveyor.settings import Settings

    own_redis.stop()
    backend = RedisBackend(Settings(url=own_redis.url, prefix="t_dead"))
    started = time.monotonic()
    with pytest.raises(BackendError):
        await backend.connect()
    assert time.monotonic() - started < 8
    with pytest.raises(BackendError):
        await backend.get_job(1)
    own_redis.start()
    await backend.connect()  # connects for real once the server is back
    try:
        assert await backend.get_job(1) is None
    finally:
        await backend.close()


# -- the hand-off under faults ---------------------------------------------------------------


def _standing(token: str) -> ClaimParams:
    return ClaimParams(worker_id="w1", token=token, limit=5, now=NOW, lease_expires_at=NOW + 30)


def _registered_as(own_redis: OwnRedis, backend: RedisBackend, token: str) -> bool:
    """Whether ``backend``'s standing claim with ``token`` is registered."""
    hand = backend._waker._hand  # type: ignore[union-attr]
    assert hand is not None
    try:
        with own_redis.client() as c:
            reg = c.hget(backend._keys.waiters, hand.id)
    except redis.RedisError:
        return False
    return reg is not None and json.loads(reg)["t"] == token


class _Waits:
    """Waits with a standing claim in a loop, like an idle worker; collects handed jobs."""

    def __init__(self, backend: RedisBackend, token: str) -> None:
        self.backend = backend
        self.token = token
        self.handed: list[ClaimedJob] = []
        self._stop = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while not self._stop:
            self.handed += await self.backend.wait_for_work(0.5, _standing(self.token))

    async def stop(self) -> None:
        self._stop = True
        self.backend.wake()
        await asyncio.wait_for(self.task, 10)


async def test_a_killed_connection_while_registered_recovers(
    make_backend: Any, own_redis: OwnRedis
) -> None:
    worker: RedisBackend = await make_backend(own_redis.url)
    producer: RedisBackend = await make_backend(own_redis.url)
    await worker.wait_for_work(0.01)
    waiting = asyncio.ensure_future(worker.wait_for_work(30, _standing("first")))
    await wait_until(lambda: _registered_as(own_redis, worker, "first"))
    with own_redis.client() as c:
        assert c.client_kill_filter(_type="normal", skipme=True) >= 2
    assert await asyncio.wait_for(waiting, 10) == []  # its pop died with its connection
    # the next waits release the claim left behind, register again and get jobs handed over
    waits = _Waits(worker, "again")
    await wait_until(lambda: _registered_as(own_redis, worker, "again"))
    [job_id] = await _eventually_ok(lambda: enqueue(producer, new_job(run_at=NOW - 1)))
    await wait_until(lambda: waits.handed)
    await waits.stop()
    assert [(j.id, j.token) for j in waits.handed] == [(job_id, "again")]


async def test_a_server_restart_while_registered_recovers(
    make_backend: Any, own_redis: OwnRedis
) -> None:
    worker: RedisBackend = await make_backend(own_redis.url)
    producer: RedisBackend = await make_backend(own_redis.url)
    waits = _Waits(worker, "before")
    await wait_until(lambda: _registered_as(own_redis, worker, "before"))
    own_redis.stop()
    own_redis.start()  # a fresh, empty server: no scripts, no registration
    waits.token = "after"
    await wait_until(lambda: _registered_as(own_redis, worker, "after"), timeout=15)
    [job_id] = await _eventually_ok(lambda: enqueue(producer, new_job(run_at=NOW - 1)))
    await wait_until(lambda: waits.handed)
    await waits.stop()
    assert [(j.id, j.token) for j in waits.handed] == [(job_id, "after")]
    with own_redis.client() as c:
        assert c.hgetall(worker._keys.waiters) == {}

"""Faults on a private redis-server: script cache flushed, connections killed, the
server restarted, an eviction policy that can lose jobs. Never the shared 6379 server."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from conveyor.backends.redis.backend import RedisBackend
from conveyor.errors import BackendError
from tests.integration.redis.helpers import OwnRedis, claim_params, enqueue, new_job, wait_until

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
    await asyncio.sleep(0.1)
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
    await asyncio.sleep(0.1)
    await _eventually_ok(lambda: enqueue(producer, new_job()))
    await asyncio.wait_for(waiting, 5)


async def test_killed_stream_reader_recovers(make_backend: Any, own_redis: OwnRedis) -> None:
    backend: RedisBackend = await make_backend(own_redis.url)
    _, cursor = await backend.read_events(None, 10, 0)
    reading = asyncio.ensure_future(backend.read_events(cursor, 10, 30))
    await asyncio.sleep(0.1)
    with own_redis.client() as c:
        c.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(BackendError):
        await asyncio.wait_for(reading, 5)
    [job_id] = await _eventually_ok(lambda: enqueue(backend, new_job()))
    events, _ = await backend.read_events(cursor, 10, 5)
    assert [(e.type, e.job_id) for e in events] == [("enqueued", job_id)]


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
    await asyncio.sleep(0.1)
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

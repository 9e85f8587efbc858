"""Fixtures for the Redis backend's own tests: a connected backend on a fresh key prefix
(its keys removed afterwards), direct reads of those keys, and a private redis-server for
tests that restart or reconfigure the server (never the shared one on 6379)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends.redis.backend import RedisBackend
from conveyor.settings import Settings
from tests.conftest import REDIS_URL, require_backend
from tests.integration.redis.helpers import OwnRedis, Raw, delete_keys


@pytest.fixture
def redis_url() -> str:
    require_backend("redis")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    token = "t_" + uuid.uuid4().hex[:12]
    yield token
    delete_keys(redis_url, token)


@pytest.fixture
async def make_backend(redis_url: str, prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """Connected backends on this test's prefix (several act like several processes)."""
    made: list[RedisBackend] = []

    async def make(url: str | None = None, **settings: Any) -> RedisBackend:
        s = Settings(url=url or redis_url, prefix=prefix, poll_interval=0.2, **settings)
        backend = RedisBackend(s)
        await backend.connect()
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def backend(make_backend: Callable[..., Any]) -> RedisBackend:
    b: RedisBackend = await make_backend()
    return b


@pytest.fixture
def raw(redis_url: str, prefix: str) -> Iterator[Raw]:
    """Direct (sync) reads of this test's keys."""
    r = Raw(redis_url, prefix)
    yield r
    r.client.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()

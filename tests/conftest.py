"""Shared fixtures: a ``queue`` per test on every backend (sqlite, postgres, redis).

Each test gets its own store: a tmp_path file on SQLite, a fresh schema on PostgreSQL, a
fresh key prefix on Redis, removed afterwards. Locally a backend whose server does not
answer is skipped with a loud reason; with ``CI`` set it fails instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import conveyor

PG_URL = os.environ.get("CONVEYOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CONVEYOR_TEST_REDIS", "redis://127.0.0.1:6379/0")
BACKENDS = ("sqlite", "postgres", "redis")
IN_CI = bool(os.environ.get("CI"))


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _unavailable(name: str) -> str | None:
    if name == "postgres":
        try:
            import psycopg  # noqa: F401

            from conveyor.backends.postgres.backend import PostgresBackend  # noqa: F401
        except ImportError as exc:
            return f"postgres backend not importable: {exc}"
        if not _port_open("127.0.0.1", 5432):
            return "PostgreSQL is not answering on 127.0.0.1:5432"
    if name == "redis":
        try:
            import redis  # noqa: F401

            from conveyor.backends.redis.backend import RedisBackend  # noqa: F401
        except ImportError as exc:
            return f"redis backend not importable: {exc}"
        if not _port_open("127.0.0.1", 6379):
            return "Redis is not answering on 127.0.0.1:6379"
    return None


def require_backend(name: str) -> None:
    reason = _unavailable(name)
    if reason:
        if IN_CI:
            pytest.fail(f"{name} tests must run in CI: {reason}")
        pytest.skip(f"SKIPPING {name.upper()} TESTS: {reason}")


class Store:
    """One test's isolated store: build queues on it with ``store.queue(**settings)``."""

    def __init__(self, backend: str, tmp_path: Any):
        self.backend = backend
        self.token = "t_" + uuid.uuid4().hex[:12]
        if backend == "sqlite":
            self.url = f"sqlite:///{tmp_path / 'jobs.db'}"
            self.kwargs: dict[str, Any] = {}
        elif backend == "postgres":
            self.url = PG_URL
            self.kwargs = {"schema": self.token}
        else:
            self.url = REDIS_URL
            self.kwargs = {"prefix": self.token}
        self.queues: list[conveyor.Queue] = []

    @property
    def env(self) -> dict[str, str]:
        """CONVEYOR_* variables that point a child process at this store."""
        env = {"CONVEYOR_URL": self.url}
        if self.backend == "postgres":
            env["CONVEYOR_SCHEMA"] = self.token
        if self.backend == "redis":
            env["CONVEYOR_PREFIX"] = self.token
        return env

    def queue(self, **kwargs: Any) -> conveyor.Queue:
        q = conveyor.Queue(self.url, **{**self.kwargs, **kwargs})
        self.queues.append(q)
        return q

    async def cleanup(self) -> None:
        for q in self.queues:
            try:
                await asyncio.wait_for(q.close(), 30)
            except Exception:
                pass
        await remove_store(self.backend, self.token)


async def remove_store(kind: str, token: str) -> None:
    """Drop one test's PostgreSQL schema or unlink its Redis keys (SQLite: its tmp file
    goes with tmp_path)."""
    if kind == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{token}" CASCADE')
    elif kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=f"*{token}*", count=1000)]
            if keys:
                await client.unlink(*keys)
        finally:
            await client.aclose()


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    require_backend(request.param)
    return str(request.param)


@pytest.fixture
async def store(backend_name: str, tmp_path: Any) -> AsyncIterator[Store]:
    s = Store(backend_name, tmp_path)
    yield s
    await s.cleanup()


@pytest.fixture
async def queue(store: Store) -> conveyor.Queue:
    """A migrated queue with fast timings (short lease and sweep) on this test's store."""
    q = store.queue(lease=2.0, heartbeat_interval=0.5, sweep_interval=0.2, poll_interval=0.2)
    await q.migrate()
    return q


async def wait_for(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` (sync or async) until truthy or fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)

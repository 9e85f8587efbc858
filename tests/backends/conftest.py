"""Fixtures of the backend conformance suite: a connected, migrated ``backend`` per test on
every store (sqlite, postgres, redis), built the way the core builds it.

Each test gets its own store: a tmp_path file on SQLite, a fresh schema on PostgreSQL, a
fresh key prefix on Redis, removed afterwards. The skip/fail policy is the one of
``tests/conftest.py``: locally a server that does not answer skips loudly; with ``CI`` set
it fails.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends import backend_class, from_settings
from conveyor.backends.base import Backend
from conveyor.settings import Settings
from tests.conftest import BACKENDS, PG_URL, REDIS_URL, remove_store, require_backend


class Store:
    """One test's isolated store; :meth:`build` makes backends on it (several act like
    several processes), all closed by :meth:`cleanup`."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.token = "t_" + uuid.uuid4().hex[:12]
        self.path = tmp_path / "jobs.db"
        self.url = {"sqlite": f"sqlite:///{self.path}", "postgres": PG_URL, "redis": REDIS_URL}[
            kind
        ]
        self.built: list[Backend] = []

    @property
    def hands_off(self) -> bool:
        """Whether this store's ``wait_for_work`` hands jobs over (its capability flag)."""
        return bool(backend_class(self.settings()).hands_off)

    def settings(self) -> Settings:
        # env={}: a CONVEYOR_* variable of the developer's shell must not leak in
        return Settings.resolve(env={}, url=self.url, schema=self.token, prefix=self.token)

    def build(self) -> Backend:
        """A new backend on this store, not connected."""
        backend = from_settings(self.settings())
        self.built.append(backend)
        return backend

    async def connected(self) -> Backend:
        """A new backend on this store, connected and migrated."""
        backend = self.build()
        await backend.connect()
        await backend.migrate()
        return backend

    def caller_connection(self) -> Any:
        """A sync connection of the store's own driver, as a caller's transaction would
        be (``connection=``); None where the store has none."""
        if self.kind == "sqlite":
            return sqlite3.connect(self.path)
        if self.kind == "postgres":
            import psycopg

            return psycopg.Connection.connect(PG_URL)
        return None

    async def async_caller_connection(self) -> Any:
        """What a caller passes as ``connection=`` to the async enqueue: psycopg's
        AsyncConnection on PostgreSQL, the (only) sqlite3 connection on SQLite."""
        if self.kind == "postgres":
            import psycopg

            return await psycopg.AsyncConnection.connect(PG_URL)
        return self.caller_connection()

    async def cleanup(self) -> None:
        for backend in reversed(self.built):
            try:
                await asyncio.wait_for(backend.close(), 30)
            except Exception:
                pass
        await remove_store(self.kind, self.token)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every store for the suite; one store for a backend-only file, named after it
    (``test_ops_postgres.py``: PostgreSQL only)."""
    if "kind" in metafunc.fixturenames:
        stem = metafunc.module.__name__.rsplit(".", 1)[-1]
        only = [k for k in BACKENDS if stem.endswith("_" + k)]
        metafunc.parametrize("kind", only or list(BACKENDS), indirect=True)


@pytest.fixture
def kind(request: pytest.FixtureRequest) -> str:
    """The store kind under test (the test id says which: ``[sqlite]`` …)."""
    require_backend(request.param)
    return str(request.param)


@pytest.fixture
async def store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(kind, tmp_path)
    try:
        yield s
    finally:
        await s.cleanup()


@pytest.fixture
async def backend(store: Store) -> Backend:
    """A connected, migrated backend on this test's own store (closed by ``store``)."""
    return await store.connected()


@pytest.fixture
async def pg(store: Store) -> Any:
    """The PostgreSQL backend of a PostgreSQL-only file (``test_*_postgres.py``)."""
    from conveyor.backends.postgres.backend import PostgresBackend

    backend = await store.connected()
    assert isinstance(backend, PostgresBackend)
    return backend


@pytest.fixture
async def admin() -> AsyncIterator[Any]:
    """A plain autocommit PostgreSQL connection, for looking behind the backend's back."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def client() -> AsyncIterator[Any]:
    """A Redis client of a Redis-only file (``test_*_redis.py``), decoding replies."""
    import redis.asyncio as aioredis

    c = aioredis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield c
    finally:
        await c.aclose()

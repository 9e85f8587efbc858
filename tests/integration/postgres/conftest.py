"""Fixtures of the PostgreSQL backend tests: a fresh schema per test, dropped afterwards,
and connected, migrated backends on it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
import pytest

from conveyor.backends.postgres.backend import PostgresBackend
from tests.conftest import require_backend
from tests.integration.postgres.helpers import PG_URL, make_backend

MakeBackend = Callable[..., Awaitable[PostgresBackend]]


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    require_backend("postgres")
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
async def admin() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A plain autocommit connection for looking behind the backend's back."""
    require_backend("postgres")
    async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def new_backend(schema: str) -> AsyncIterator[MakeBackend]:
    """Build more connected backends on the test's schema (closed at the end)."""
    made: list[PostgresBackend] = []

    async def build(migrate: bool = True, **kw: Any) -> PostgresBackend:
        backend = make_backend(schema, **kw)
        await backend.connect()
        made.append(backend)
        if migrate:
            await backend.migrate()
        return backend

    yield build
    for backend in made:
        await backend.close()


@pytest.fixture
async def backend(new_backend: MakeBackend) -> PostgresBackend:
    """A connected backend on a migrated schema."""
    return await new_backend()

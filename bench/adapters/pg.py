"""Small PostgreSQL helpers for the adapters (psycopg 3, autocommit)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from bench.config import PG_ADMIN_DB, pg_url


async def _admin() -> psycopg.AsyncConnection[tuple[object, ...]]:
    return await psycopg.AsyncConnection.connect(pg_url(PG_ADMIN_DB), autocommit=True)


async def create_database(name: str) -> None:
    """Drop ``name`` if a crashed earlier run left it behind, then create it empty."""
    await drop_database(name)
    async with await _admin() as conn:
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


async def drop_database(name: str) -> None:
    async with await _admin() as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


async def execute(db: str, statement: str | sql.Composable, *params: object) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url(db), autocommit=True) as conn:
        await conn.execute(statement, params or None)  # type: ignore[arg-type]


async def reset_public_schema(db: str) -> None:
    await execute(db, "DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")


async def analyze(db: str) -> None:
    """Give the planner statistics after a bulk pre-load (every Postgres system alike)."""
    await execute(db, "ANALYZE")

"""Backend-specific writes that no public API allows (to simulate a corrupt row).

Each helper goes straight at the store the test's queue uses, bypassing conveyor.
"""

from __future__ import annotations

import sqlite3

import conveyor
from tests.conftest import PG_URL, REDIS_URL, Store


def _sqlite_path(store: Store) -> str:
    return store.url[len("sqlite:///") :]


async def set_payload(store: Store, queue: conveyor.Queue, job_id: int, raw: str) -> None:
    """Overwrite a stored job's payload with ``raw`` text (e.g. undecodable JSON)."""
    if store.backend == "sqlite":
        conn = sqlite3.connect(_sqlite_path(store), timeout=30)
        try:
            with conn:
                cur = conn.execute(
                    "UPDATE conveyor_jobs SET payload = ? WHERE id = ?", (raw, job_id)
                )
                assert cur.rowcount == 1
        finally:
            conn.close()
    elif store.backend == "postgres":
        import psycopg
        from psycopg import sql

        async with await psycopg.AsyncConnection.connect(PG_URL, autocommit=True) as conn:
            cur = await conn.execute(
                sql.SQL("UPDATE {}.jobs SET payload = %s WHERE id = %s").format(
                    sql.Identifier(store.token)
                ),
                (raw, job_id),
            )
            assert cur.rowcount == 1
    else:
        import redis.asyncio as aioredis

        from conveyor.backends.redis.keys import Keys

        client = aioredis.from_url(REDIS_URL)
        try:
            key = Keys(store.token).job(job_id)
            assert await client.exists(key)
            await client.hset(key, "payload", raw)
        finally:
            await client.aclose()


def standing_claims(store: Store) -> int:
    """How many standing claims (idle workers' registrations for a hand-off) the store
    holds; 0 on backends without hand-off."""
    if store.backend != "redis":
        return 0
    import redis

    from conveyor.backends.redis.keys import Keys

    with redis.Redis.from_url(REDIS_URL) as client:
        return int(client.hlen(Keys(store.token).waiters))

"""Migrations: idempotent, safe to run concurrently, and the same as the DBA script."""

from __future__ import annotations

from typing import Any

import psycopg

from conveyor.backends.postgres.backend import PostgresBackend
from tests.integration.postgres import procs
from tests.integration.postgres.conftest import MakeBackend
from tests.integration.postgres.helpers import (
    claim_params,
    enqueue,
    make_backend,
    new_job,
    run_children,
)


async def _versions(admin: psycopg.AsyncConnection[Any], schema: str) -> list[int]:
    cur = await admin.execute(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')
    return [row[0] for row in await cur.fetchall()]


async def test_migrate_twice_is_a_no_op(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    [job_id] = await enqueue(backend, new_job())
    await backend.migrate()
    await backend.migrate()
    assert await _versions(admin, schema) == [1]
    assert await backend.get_job(job_id) is not None


async def test_migration_sql_applied_by_hand_then_migrate(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """`conveyor migrate --sql` output, run twice by a DBA, gives the same schema that
    migrate() recognises as up to date."""
    backend = await new_backend(migrate=False)
    script = backend.migration_sql()
    await admin.execute(script.encode())
    await admin.execute(script.encode())  # safe to run again
    assert await _versions(admin, schema) == [1]
    await backend.migrate()
    assert await _versions(admin, schema) == [1]
    [job_id] = await enqueue(backend, new_job())
    assert [j.id for j in await backend.claim(claim_params())] == [job_id]


async def test_state_check_constraint_uses_the_job_states(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    [job_id] = await enqueue(backend, new_job())
    try:
        await admin.execute(
            f'UPDATE "{schema}".jobs SET state = %s WHERE id = %s', ["done", job_id]
        )
    except psycopg.errors.CheckViolation:
        pass
    else:  # pragma: no cover
        raise AssertionError("an unknown state was accepted")


async def test_migrate_concurrently_from_two_processes(schema: str) -> None:
    for _ in range(2):  # the first round races on a fresh schema, the second on a done one
        outputs = run_children(procs.migrate, [(schema,), (schema,)])
        assert outputs == ["ok", "ok"]
    async with await psycopg.AsyncConnection.connect(make_backend(schema).conninfo) as c:
        cur = await c.execute(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')
        assert [r[0] for r in await cur.fetchall()] == [1]

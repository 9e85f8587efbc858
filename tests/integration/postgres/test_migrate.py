"""Migrations: idempotent, safe to run concurrently, and the same as the DBA script."""

from __future__ import annotations

from typing import Any

import psycopg

from conveyor.backends.postgres.backend import PostgresBackend
from conveyor.backends.postgres.sqlfiles import bootstrap_sql, migrations
from tests.integration.postgres import procs
from tests.integration.postgres.conftest import MakeBackend
from tests.integration.postgres.helpers import (
    NOW,
    claim_params,
    enqueue,
    make_backend,
    new_job,
    run_children,
)

ALL = [1, 2, 3, 4, 5, 6, 7, 8]  # every migration file, by version


async def _versions(admin: psycopg.AsyncConnection[Any], schema: str) -> list[int]:
    cur = await admin.execute(f'SELECT version FROM "{schema}".schema_migrations ORDER BY 1')
    return [row[0] for row in await cur.fetchall()]


async def test_migrate_twice_is_a_no_op(
    backend: PostgresBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    [job_id] = await enqueue(backend, new_job())
    await backend.migrate()
    await backend.migrate()
    assert await _versions(admin, schema) == ALL
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
    assert await _versions(admin, schema) == ALL
    await backend.migrate()
    assert await _versions(admin, schema) == ALL
    [job_id] = await enqueue(backend, new_job())
    assert [j.id for j in await backend.claim(claim_params())] == [job_id]


async def test_migrate_upgrades_a_schema_at_version_1(
    new_backend: MakeBackend, admin: psycopg.AsyncConnection[Any], schema: str
) -> None:
    """A schema made by the first release, with a job in it, gets the later migrations
    (0002: stalls); the job keeps its row, with the new columns' defaults."""
    first = migrations()[0]
    assert first.version == 1
    await admin.execute(bootstrap_sql(schema).encode())
    await admin.execute(first.sql(schema).encode())
    await admin.execute(
        f'INSERT INTO "{schema}".schema_migrations (version, name) VALUES (1, %s)', [first.name]
    )
    await admin.execute(
        f'INSERT INTO "{schema}".jobs (state, name, channel, payload, run_at, created_at) '
        "VALUES ('queued', 'old', 'default', '{}', to_timestamp(%s), to_timestamp(%s))",
        [NOW, NOW],
    )
    backend = await new_backend()  # migrates
    assert await _versions(admin, schema) == ALL
    [old] = await backend.claim(claim_params())
    assert (old.name, old.attempts, old.stalls, old.max_stalls) == ("old", 1, 0, 1)
    job = await backend.get_job(old.id)
    assert job is not None and job.stalls == 0


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
        assert [r[0] for r in await cur.fetchall()] == ALL

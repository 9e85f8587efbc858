"""pgqueuer: worker side (``pgq run bench.apps.pgqueuer_app:factory``).

pgqueuer 1.6 wants the factory to be an async context manager yielding a PgQueuer.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.models import Job

from bench import probe


@asynccontextmanager
async def factory() -> AsyncIterator[PgQueuer]:
    conn = await asyncpg.connect(os.environ["BENCH_PG_URL"])
    pgq = PgQueuer.from_asyncpg_connection(conn)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        await probe.run_async(json.loads(job.payload or b"{}")["n"])

    try:
        yield pgq
    finally:
        await conn.close()

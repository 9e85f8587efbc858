"""pgqueuer 1.6 on PostgreSQL (asyncpg), its `pgq run` worker."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg
from pgqueuer import AsyncpgDriver, Queries

from bench.adapters import pg
from bench.adapters.base import Adapter, Context
from bench.config import pg_url
from bench.procs import bin_path

DB = "bench_pgqueuer"


def _payload(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


class PgqueuerAdapter(Adapter):
    name = "pgqueuer"
    family = "postgres"
    has_bulk = True
    bulk_api = "Queries.enqueue(list[entrypoint], list[payload], list[priority])"
    config = (
        "`pgq run …:factory --max-concurrent-tasks N --batch-size min(10, N/2)` per process "
        "(asyncpg); LISTEN/NOTIFY + SKIP LOCKED batch dequeue; rows moved to its log table"
    )

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        await pg.create_database(DB)
        self.conn: Any = None
        await self.reset()

    async def reset(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        await pg.reset_public_schema(DB)
        self.conn = await asyncpg.connect(pg_url(DB))
        self.queries = Queries(AsyncpgDriver(self.conn))
        await self.queries.install()

    async def teardown(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        await pg.drop_database(DB)

    async def enqueue_one(self, n: int) -> None:
        await self.queries.enqueue("noop", _payload(n), 0)

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        await self.queries.enqueue(["noop"] * len(ns), [_payload(n) for n in ns], [0] * len(ns))

    async def after_preload(self) -> None:
        await pg.analyze(DB)

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_PG_URL": pg_url(DB)}

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        # pgqueuer 1.6 requires max_concurrent_tasks >= 2 * batch_size
        batch = max(1, min(10, concurrency // 2))
        cmd = [
            bin_path("pgq"),
            "run",
            "bench.apps.pgqueuer_app:factory",
            f"--max-concurrent-tasks={concurrency}",
            f"--batch-size={batch}",
        ]
        return [cmd] * n_processes

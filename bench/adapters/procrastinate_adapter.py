"""procrastinate 3 on PostgreSQL (PsycopgConnector), its CLI worker at warnings-only logging."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.adapters import pg
from bench.adapters.base import Adapter, Context
from bench.apps import procrastinate_app
from bench.config import pg_url
from bench.procs import bin_path

DB = "bench_procrastinate"
APP = "bench.apps.procrastinate_app.app"


class ProcrastinateAdapter(Adapter):
    name = "procrastinate"
    family = "postgres"
    scenarios = frozenset("ABCDE")
    has_bulk = True
    bulk_api = "Task.batch_defer_async(*kwargs)"
    config = (
        "`procrastinate --log-level=warning worker --concurrency=N` per process; "
        "LISTEN/NOTIFY + 5 s poll; rows kept (status succeeded)"
    )

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        await pg.create_database(DB)
        self.app: Any = None
        await self.reset()

    async def reset(self) -> None:
        if self.app is not None:
            await self.app.close_async()
        await pg.reset_public_schema(DB)
        self.app = procrastinate_app.build(pg_url(DB))
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()
        self.task = self.app.tasks["noop"]

    async def teardown(self) -> None:
        if self.app is not None:
            await self.app.close_async()
        await pg.drop_database(DB)

    async def enqueue_one(self, n: int) -> None:
        await self.task.defer_async(n=n)

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        await self.task.batch_defer_async(*({"n": n} for n in ns))

    async def after_preload(self) -> None:
        await pg.analyze(DB)

    async def preload_finished(self, count: int) -> None:
        # Scenario E: `count` finished jobs, as a long-running deployment keeps them.
        # Inserted server-side in one statement (the status-event trigger fires as usual).
        await pg.execute(
            DB,
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts) "
            "SELECT 'default', 'noop', jsonb_build_object('n', -g), 'succeeded', 1 "
            "FROM generate_series(1, %s) AS g",
            count,
        )
        await pg.execute(DB, "VACUUM ANALYZE procrastinate_jobs")

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_PG_URL": pg_url(DB)}

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        cmd = [
            bin_path("procrastinate"),
            f"--app={APP}",
            "--log-level=warning",
            "worker",
            f"--concurrency={concurrency}",
        ]
        return [cmd] * n_processes

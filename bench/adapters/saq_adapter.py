"""saq on PostgreSQL (psycopg pool) and on Redis; its `saq` worker CLI."""

from __future__ import annotations

from typing import ClassVar

from bench.adapters import pg, rediskit
from bench.adapters.base import Adapter, Context
from bench.apps import saq_app
from bench.config import REDIS_DB, pg_url, redis_url
from bench.procs import bin_path

PG_DB = "bench_saq"
SETTINGS = "bench.apps.saq_app.settings"


class _SaqAdapter(Adapter):
    config = "`saq bench.apps.saq_app.settings --workers P`, `concurrency` = N; job kept for ttl"
    url: ClassVar[str]

    async def _open(self) -> None:
        self.queue = saq_app.build(self.url)
        await self.queue.connect()

    async def _close(self) -> None:
        await self.queue.disconnect()

    async def enqueue_one(self, n: int) -> None:
        await self.queue.enqueue("noop", n=n)

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_SAQ_URL": self.url}

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        # --quiet: no logging set-up, so no per-job INFO lines
        return [[bin_path("saq"), SETTINGS, f"--workers={n_processes}", "--quiet"]]


class SaqPostgresAdapter(_SaqAdapter):
    name = "saq-postgres"
    family = "postgres"
    url = pg_url(PG_DB)
    config = _SaqAdapter.config + "; LISTEN/NOTIFY + SKIP LOCKED"

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        await pg.create_database(PG_DB)
        await self._open()

    async def reset(self) -> None:
        await self._close()
        await pg.reset_public_schema(PG_DB)
        await self._open()  # saq migrates its tables on connect

    async def teardown(self) -> None:
        await self._close()
        await pg.drop_database(PG_DB)

    async def after_preload(self) -> None:
        await pg.analyze(PG_DB)


class SaqRedisAdapter(_SaqAdapter):
    name = "saq-redis"
    family = "redis"
    url = redis_url(REDIS_DB["saq-redis"])
    config = _SaqAdapter.config + "; blocking dequeue (BLMOVE)"

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        rediskit.flush(self.name)
        await self._open()

    async def reset(self) -> None:
        await self._close()
        rediskit.flush(self.name)
        await self._open()

    async def teardown(self) -> None:
        await self._close()
        rediskit.flush(self.name)

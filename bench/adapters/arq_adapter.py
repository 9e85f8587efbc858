"""arq on Redis, its `arq` worker CLI with its defaults (polls every 0.5 s)."""

from __future__ import annotations

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.adapters import rediskit
from bench.adapters.base import Adapter, Context
from bench.config import REDIS_DB, redis_url
from bench.procs import bin_path

URL = redis_url(REDIS_DB["arq"])


class ArqAdapter(Adapter):
    name = "arq"
    family = "redis"
    config = (
        "`arq bench.apps.arq_app.WorkerSettings` per process, `max_jobs` = N; "
        "defaults kept: polling with poll_delay 0.5 s; result kept 1 h"
    )

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        rediskit.flush(self.name)
        self.pool: ArqRedis = await create_pool(RedisSettings.from_dsn(URL))

    async def reset(self) -> None:
        rediskit.flush(self.name)

    async def teardown(self) -> None:
        await self.pool.aclose()
        rediskit.flush(self.name)

    async def enqueue_one(self, n: int) -> None:
        await self.pool.enqueue_job("noop", n)

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_REDIS_URL": URL}

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        return [[bin_path("arq"), "bench.apps.arq_app.WorkerSettings"]] * n_processes

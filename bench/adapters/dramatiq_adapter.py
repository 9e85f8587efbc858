"""dramatiq with its Redis broker: `dramatiq … --processes P --threads N`."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from bench.adapters import rediskit
from bench.adapters.base import Adapter, Context
from bench.config import REDIS_DB, redis_url
from bench.procs import bin_path

URL = redis_url(REDIS_DB["dramatiq"])


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    family = "redis"
    sync_jobs = True
    config = (
        "`dramatiq bench.apps.dramatiq_app --processes P --threads N` (Redis broker); "
        "Lua fetch with prefetch, idle backoff 5 ms -> 1 s; no result backend"
    )

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        rediskit.flush(self.name)
        os.environ.update(self.worker_env())  # the app module reads it at import
        self.app: ModuleType = importlib.import_module("bench.apps.dramatiq_app")

    async def reset(self) -> None:
        rediskit.flush(self.name)

    async def teardown(self) -> None:
        self.app.broker.close()
        rediskit.flush(self.name)

    async def enqueue_one(self, n: int) -> None:
        self.app.noop.send(n)

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_REDIS_URL": URL}

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        return [
            [
                bin_path("dramatiq"),
                "bench.apps.dramatiq_app",
                f"--processes={n_processes}",
                f"--threads={concurrency}",
            ]
        ]

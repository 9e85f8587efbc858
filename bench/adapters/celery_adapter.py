"""celery with the Redis broker: `celery worker -P threads -c N -l WARNING`."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from bench.adapters import rediskit
from bench.adapters.base import Adapter, Context
from bench.config import REDIS_DB, redis_url
from bench.procs import bin_path

URL = redis_url(REDIS_DB["celery"])


class CeleryAdapter(Adapter):
    name = "celery"
    family = "redis"
    sync_jobs = True
    config = (
        "`celery -A bench.apps.celery_app worker -P threads -c N -l WARNING` per process; "
        "kombu Redis transport (BRPOP), prefetch multiplier 4; no result backend"
    )

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        rediskit.flush(self.name)
        os.environ.update(self.worker_env())  # the app module reads it at import
        self.app: ModuleType = importlib.import_module("bench.apps.celery_app")

    async def reset(self) -> None:
        rediskit.flush(self.name)

    async def teardown(self) -> None:
        self.app.app.close()
        rediskit.flush(self.name)

    async def enqueue_one(self, n: int) -> None:
        self.app.noop.delay(n)

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_REDIS_URL": URL}

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        return [
            [
                bin_path("celery"),
                "-A",
                "bench.apps.celery_app",
                "worker",
                "-P",
                "threads",
                f"--concurrency={concurrency}",
                "--loglevel=WARNING",
                f"--hostname=bench{i}@%h",
            ]
            for i in range(n_processes)
        ]

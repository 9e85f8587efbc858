"""huey on SQLite and on Redis: `huey_consumer -k thread -w N -q`."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from bench.adapters import rediskit
from bench.adapters.base import Adapter, Context
from bench.config import REDIS_DB, redis_url
from bench.procs import bin_path


class _HueyAdapter(Adapter):
    kind: str
    sync_jobs = True

    def _target(self) -> str:
        raise NotImplementedError

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        os.environ.update(self.worker_env())  # the app module reads them at import
        self.app: ModuleType = importlib.import_module("bench.apps.huey_app")
        self.app.huey.flush()

    async def reset(self) -> None:
        self.app.huey.flush()

    async def teardown(self) -> None:
        self.app.huey.flush()

    async def enqueue_one(self, n: int) -> None:
        self.app.noop(n)

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_HUEY_KIND": self.kind, "BENCH_HUEY_TARGET": self._target()}

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        cmd = [
            bin_path("huey_consumer"),
            "bench.apps.huey_app.huey",
            "--worker-type=thread",
            f"--workers={concurrency}",
            "--quiet",
        ]
        return [cmd] * n_processes


class HueySqliteAdapter(_HueyAdapter):
    name = "huey-sqlite"
    family = "sqlite"
    kind = "sqlite"
    config = (
        "`huey_consumer … -k thread -w N -q` per process, `SqliteHuey` file; "
        "polling 0.1 s x 1.15 backoff up to 10 s (defaults)"
    )

    def _target(self) -> str:
        return str(self.workdir / "huey.db")

    async def teardown(self) -> None:
        await super().teardown()
        for suffix in ("", "-wal", "-shm"):
            (self.workdir / f"huey.db{suffix}").unlink(missing_ok=True)


class HueyRedisAdapter(_HueyAdapter):
    name = "huey-redis"
    family = "redis"
    kind = "redis"
    config = "`huey_consumer … -k thread -w N -q` per process, `RedisHuey(blocking=True)`: BRPOP"

    def _target(self) -> str:
        return redis_url(REDIS_DB[self.name])

    async def teardown(self) -> None:
        await super().teardown()
        rediskit.flush(self.name)

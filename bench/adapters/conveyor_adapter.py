"""conveyor on SQLite, PostgreSQL and Redis, through its public API and its worker CLI.

Each scenario phase gets a fresh namespace (a new SQLite file, a new Postgres schema, a new
Redis key prefix), so ``reset`` never has to empty a queue in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import conveyor
from bench.adapters import conveyor_preload, pg, rediskit
from bench.adapters.base import Adapter, Context
from bench.apps import conveyor_app
from bench.config import REDIS_DB, pg_url, redis_url
from bench.procs import bin_path

PG_DB = "bench_conveyor"
APP = "bench.apps.conveyor_app:queue"


class _ConveyorAdapter(Adapter):
    scenarios = frozenset("ABCDE")
    has_bulk = True
    bulk_api = "await queue.enqueue_many([JobSpec(...)]) (one call per chunk)"
    # -q: warnings and errors only, as every peer runs (no per-job INFO line)
    config = "`conveyor worker bench.apps.conveyor_app:queue --concurrency N -q` per process"

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        self.phase = 0
        self.queue: Any = None
        await self._create_store()
        await self._open()

    async def reset(self) -> None:
        await self.queue.close()
        self.phase += 1
        await self._open()

    async def teardown(self) -> None:
        if self.queue is not None:
            await self.queue.close()
        await self._drop_store()

    @property
    def namespace(self) -> str:
        return f"bench_p{self.phase}"

    def url(self) -> str:
        raise NotImplementedError

    async def _create_store(self) -> None:
        pass

    async def _drop_store(self) -> None:
        pass

    async def _open(self) -> None:
        self.queue = conveyor_app.build(self.url(), self.namespace)
        await self.queue.migrate()

    async def completed_count(self) -> int | None:
        counts: dict[str, int] = await self.queue.counts()
        return counts.get("completed", 0)

    async def enqueue_one(self, n: int) -> None:
        await self.queue.enqueue("noop", {"n": n})

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        await self.queue.enqueue_many([conveyor.JobSpec("noop", {"n": n}) for n in ns])

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_CONVEYOR_URL": self.url(), "BENCH_CONVEYOR_NAMESPACE": self.namespace}

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        cmd = [bin_path("conveyor"), "worker", APP, f"--concurrency={concurrency}", "-q"]
        return [cmd] * n_processes


class ConveyorSqliteAdapter(_ConveyorAdapter):
    name = "conveyor-sqlite"
    family = "sqlite"

    def _path(self) -> str:
        return str(self.workdir / f"conveyor-{self.namespace}.db")

    def url(self) -> str:
        return f"sqlite:///{self._path()}"  # the path is absolute: sqlite:////abs/…

    async def _drop_store(self) -> None:
        for db in self.workdir.glob("conveyor-*.db*"):
            db.unlink()

    async def preload_finished(self, count: int) -> None:
        conveyor_preload.sqlite_finished(self._path(), count)


class ConveyorPostgresAdapter(_ConveyorAdapter):
    name = "conveyor-postgres"
    family = "postgres"

    def url(self) -> str:
        return pg_url(PG_DB)

    async def _create_store(self) -> None:
        await pg.create_database(PG_DB)

    async def _drop_store(self) -> None:
        await pg.drop_database(PG_DB)

    async def after_preload(self) -> None:
        await pg.analyze(PG_DB)

    async def preload_finished(self, count: int) -> None:
        await conveyor_preload.postgres_finished(PG_DB, self.namespace, count)


class ConveyorRedisAdapter(_ConveyorAdapter):
    name = "conveyor-redis"
    family = "redis"

    def url(self) -> str:
        return redis_url(REDIS_DB[self.name])

    async def _drop_store(self) -> None:
        rediskit.delete_prefix(self.name, "{bench_p")  # keys are "{<prefix>}:…"

    async def preload_finished(self, count: int) -> None:
        conveyor_preload.redis_finished(self.url(), self.namespace, count)

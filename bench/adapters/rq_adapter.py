"""rq on Redis: `rq worker-pool` of SimpleWorkers (rq has no in-process concurrency)."""

from __future__ import annotations

from collections.abc import Sequence

from rq import Queue

from bench.adapters import rediskit
from bench.adapters.base import Adapter, Context
from bench.config import REDIS_DB, redis_url
from bench.procs import bin_path

URL = redis_url(REDIS_DB["rq"])
FUNC = "bench.apps.rq_app.noop"


class RqAdapter(Adapter):
    name = "rq"
    family = "redis"
    has_bulk = True
    bulk_api = "Queue.enqueue_many([Queue.prepare_data(...)]) (one pipeline)"
    sync_jobs = True
    config = (
        "`rq worker-pool -n N -w rq.worker.SimpleWorker -q` per process: concurrency N = N "
        "worker processes, no fork per job; BLPOP"
    )

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        rediskit.flush(self.name)
        self.redis = rediskit.client(self.name)
        self.queue = Queue("bench", connection=self.redis)

    async def reset(self) -> None:
        rediskit.flush(self.name)

    async def teardown(self) -> None:
        rediskit.flush(self.name)
        self.redis.close()

    async def enqueue_one(self, n: int) -> None:
        self.queue.enqueue(FUNC, n)

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        self.queue.enqueue_many([Queue.prepare_data(FUNC, args=(n,)) for n in ns])

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        cmd = [
            bin_path("rq"),
            "worker-pool",
            f"--num-workers={concurrency}",
            "--worker-class=rq.worker.SimpleWorker",
            f"--url={URL}",
            "--quiet",
            "bench",
        ]
        return [cmd] * n_processes

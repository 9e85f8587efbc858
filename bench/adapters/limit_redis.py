"""limit-redis: redis-py + hiredis, one Lua script per transition, pipelined cycle."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence

from bench.adapters import rediskit
from bench.adapters.base import Adapter, Context
from bench.config import REDIS_DB, redis_url
from bench.limits import redis_common as rc

URL = redis_url(REDIS_DB["limit-redis"])


class LimitRedisAdapter(Adapter):
    name = "limit-redis"
    family = "redis"
    scenarios = frozenset("AB")
    has_bulk = True
    bulk_api = "one pipeline of enqueue.lua calls per chunk"
    config = (
        "redis-py + hiredis; enqueue.lua per job; worker loop: claim.lua of min(10, N) and "
        "complete.lua of the previous batch in one pipelined round trip"
    )

    async def setup(self, ctx: Context) -> None:
        self.ctx = ctx
        rediskit.flush(self.name)
        self.redis = rediskit.client(self.name)
        self.enqueue = rc.enqueue_script(self.redis)

    async def reset(self) -> None:
        rediskit.flush(self.name)

    async def teardown(self) -> None:
        rediskit.flush(self.name)
        self.redis.close()

    async def enqueue_one(self, n: int) -> None:
        self.enqueue(keys=rc.enqueue_keys(), args=[json.dumps({"n": n}), time.time()])

    async def enqueue_many(self, ns: Sequence[int]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        now = time.time()
        for n in ns:
            self.enqueue(keys=rc.enqueue_keys(), args=[json.dumps({"n": n}), now], client=pipe)
        pipe.execute()

    def worker_commands(self, n_processes: int, concurrency: int) -> list[list[str]]:
        cmd = [sys.executable, "-m", "bench.limits.redis_worker", URL, str(min(10, concurrency))]
        return [cmd] * n_processes

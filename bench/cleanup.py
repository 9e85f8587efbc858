"""Leave nothing behind: the bench_* databases and the Redis dbs the adapters own.

Each adapter's teardown already does this; this catches what a killed child left.
"""

from __future__ import annotations

import asyncio

from bench.config import REDIS_DB

DATABASES = ("bench_conveyor", "bench_procrastinate", "bench_pgqueuer", "bench_saq", "bench_limit")


def everything() -> None:
    try:
        from bench.adapters import pg

        async def drop_all() -> None:
            for db in DATABASES:
                await pg.drop_database(db)

        asyncio.run(drop_all())
    except Exception as exc:
        print(f"cleanup: postgres: {exc}")
    try:
        from bench.adapters import rediskit

        for system in REDIS_DB:
            if system == "conveyor-redis":
                rediskit.delete_prefix(system, "{bench_p")  # conveyor keeps to its prefix
            else:
                rediskit.flush(system)
    except Exception as exc:
        print(f"cleanup: redis: {exc}")


if __name__ == "__main__":
    everything()

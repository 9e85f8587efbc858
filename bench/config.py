"""Paths, servers and scenario sizes shared by the driver, the children and the adapters."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root
BENCH = ROOT / "bench"
WORK = BENCH / ".work"  # probe files, SQLite databases, worker logs (git-ignored)
RESULTS = BENCH / "results"

PG_HOST = os.environ.get("BENCH_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PG_PORT", "5432"))
PG_USER = os.environ.get("BENCH_PG_USER", "postgres")
PG_ADMIN_DB = os.environ.get("BENCH_PG_ADMIN_DB", "postgres")  # to CREATE/DROP bench_* dbs
REDIS_HOST = os.environ.get("BENCH_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("BENCH_REDIS_PORT", "6379"))


def pg_url(db: str, scheme: str = "postgresql") -> str:
    return f"{scheme}://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"


def redis_url(db: int) -> str:
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


# Redis database per system: each is FLUSHDB'd only by its own adapter. conveyor-redis
# lives in its own db too but cleans up by key prefix (it never needs FLUSHDB).
REDIS_DB = {
    "arq": 1,
    "rq": 2,
    "saq-redis": 3,
    "huey-redis": 4,
    "dramatiq": 5,
    "celery": 6,
    "conveyor-redis": 7,
    "limit-redis": 8,
}

STOP_GRACE_S = 10.0  # SIGTERM, then SIGKILL after this long


@dataclass(frozen=True)
class Sizes:
    """Job counts per scenario, at ``--jobs-scale`` 1.0 (the numbers in the issue)."""

    a_jobs: int = 10_000
    a_warmup: int = 100
    bulk_chunk: int = 1_000
    b_jobs: int = 20_000
    b_concurrency: int = 10
    c_jobs: int = 300
    c_rate: float = 50.0  # jobs/s
    c_warmup: int = 5
    c_idle_s: float = 2.0
    d_jobs: int = 2_000
    d_sleep_ms: int = 10
    d_concurrency: int = 50
    e_finished: int = 1_000_000
    e_jobs: int = 10_000

    def scaled(self, scale: float) -> Sizes:
        def s(n: int, floor: int) -> int:
            return max(floor, math.ceil(n * scale))

        return Sizes(
            a_jobs=s(self.a_jobs, 50),
            a_warmup=s(self.a_warmup, 5),
            bulk_chunk=min(self.bulk_chunk, s(self.a_jobs, 50)),
            b_jobs=s(self.b_jobs, 50),
            b_concurrency=self.b_concurrency,
            c_jobs=s(self.c_jobs, 20),
            c_rate=self.c_rate,
            c_warmup=self.c_warmup,
            c_idle_s=self.c_idle_s if scale >= 1 else 0.5,
            d_jobs=s(self.d_jobs, 50),
            d_sleep_ms=self.d_sleep_ms,
            d_concurrency=self.d_concurrency,
            e_finished=s(self.e_finished, 1_000),
            e_jobs=s(self.e_jobs, 50),
        )

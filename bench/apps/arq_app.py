"""arq: worker side (``arq bench.apps.arq_app.WorkerSettings``); defaults kept (polls 0.5 s)."""

from __future__ import annotations

import logging
import os
from typing import Any

from arq.connections import RedisSettings

from bench import probe


async def noop(ctx: dict[str, Any], n: int) -> None:
    await probe.run_async(n)


async def quiet_logs(ctx: dict[str, Any]) -> None:
    # arq logs two lines per job at INFO and has no CLI flag for the level.
    logging.getLogger("arq").setLevel(logging.WARNING)


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(
        os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1/1")
    )
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "10"))
    on_startup = quiet_logs

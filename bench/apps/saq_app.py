"""saq: worker side (``saq bench.apps.saq_app.settings``); the URL picks Postgres or Redis."""

from __future__ import annotations

import os
from typing import Any

from saq import Queue

from bench import probe


async def noop(ctx: dict[str, Any], *, n: int) -> None:
    await probe.run_async(n)


def build(url: str) -> Queue:
    return Queue.from_url(url)


settings = {
    "queue": build(os.environ.get("BENCH_SAQ_URL", "redis://127.0.0.1:6379/3")),
    "functions": [noop],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "10")),
}

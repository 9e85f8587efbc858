"""conveyor: worker side (``conveyor worker bench.apps.conveyor_app:queue``).

The URL and the namespace (Postgres schema / Redis key prefix) come from the environment
the adapter sets, so each scenario phase can use a fresh namespace.
"""

from __future__ import annotations

import os
from typing import Any

import conveyor
from bench import probe


def build(url: str, namespace: str) -> conveyor.Queue:
    kwargs: dict[str, Any] = {}
    if url.startswith("postgres"):
        kwargs["schema"] = namespace
    elif url.startswith("redis"):
        kwargs["prefix"] = namespace
    queue = conveyor.Queue(url, **kwargs)

    @queue.job("noop")
    async def noop(payload: dict[str, Any], ctx: conveyor.Context) -> None:
        await probe.run_async(payload["n"])

    return queue


queue = build(
    os.environ.get("BENCH_CONVEYOR_URL", "sqlite:///bench/.work/conveyor.db"),
    os.environ.get("BENCH_CONVEYOR_NAMESPACE", "bench"),
)

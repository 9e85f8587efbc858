"""huey: worker side (``huey_consumer bench.apps.huey_app.huey``); Redis or SQLite by env."""

from __future__ import annotations

import os

from huey import Huey, RedisHuey, SqliteHuey

from bench import probe


def build(kind: str, target: str) -> Huey:
    if kind == "sqlite":
        return SqliteHuey("bench", filename=target)
    # blocking=True: BRPOP instead of polling (RedisHuey's default too)
    return RedisHuey("bench", url=target, blocking=True)


huey = build(os.environ.get("BENCH_HUEY_KIND", "redis"), os.environ.get("BENCH_HUEY_TARGET", ""))


@huey.task()  # type: ignore[untyped-decorator]
def noop(n: int) -> None:
    probe.run_sync(n)

"""dramatiq: worker side (``dramatiq bench.apps.dramatiq_app``), Redis broker."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench import probe

broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
)
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop(n: int) -> None:
    probe.run_sync(n)

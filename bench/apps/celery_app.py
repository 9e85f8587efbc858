"""celery: worker side (``celery -A bench.apps.celery_app worker -P threads``), Redis broker."""

from __future__ import annotations

import os

from celery import Celery

from bench import probe

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/6"))
app.conf.update(
    task_ignore_result=True,  # no result backend: the probe file observes completion
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop(n: int) -> None:
    probe.run_sync(n)

"""Small helpers shared by the conformance tests (no behaviour of their own)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import conveyor
from conveyor import JobState
from tests.conftest import wait_for

#: A fixed, aware start for ManualClock-driven tests (a Monday, 00:00:30 UTC).
T0 = datetime(2030, 1, 7, 0, 0, 30, tzinfo=UTC)


@asynccontextmanager
async def running(
    worker: conveyor.Worker, drain_timeout: float = 5.0
) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``worker.run()`` in a task for the body; stop it (and check it stopped) after."""
    task = asyncio.create_task(worker.run())
    # Wait until the worker really started, so stop() is not racing its start-up.
    await wait_for(lambda: worker.running or task.done(), 10)
    try:
        yield task
    finally:
        if not task.done():
            await asyncio.wait_for(worker.stop(drain_timeout=drain_timeout), drain_timeout + 10)
        await asyncio.wait_for(task, 10)


async def wait_state(
    queue: conveyor.Queue, job_id: int, *states: JobState, timeout: float = 10.0
) -> conveyor.Job:
    """Wait until the job is in one of ``states``; returns it."""

    async def check() -> conveyor.Job | None:
        job = await queue.get_job(job_id)
        return job if job is not None and job.state in states else None

    return await wait_for(check, timeout)


async def total(queue: conveyor.Queue) -> int:
    return sum((await queue.counts()).values())


class Concurrency:
    """Counts handlers running at once (thread-safe, for async and sync handlers)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.max = 0
        self.calls = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.calls += 1
            self.max = max(self.max, self.now)

    def exit(self) -> None:
        with self._lock:
            self.now -= 1


class Events:
    """Collects every in-process event of a queue (``queue.on("*", …)``)."""

    def __init__(self, queue: conveyor.Queue) -> None:
        self.items: list[conveyor.Event] = []
        queue.on("*", self.items.append)

    def types(self, job_id: int | None = None) -> list[str]:
        return [e.type for e in self.items if job_id is None or e.job_id == job_id]

    def of(self, type_: str) -> list[conveyor.Event]:
        return [e for e in self.items if e.type == type_]

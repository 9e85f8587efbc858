"""The heartbeat: renews every lease this worker holds in one call per interval, and in
between polls for cancels requested from other processes.

A job whose lease was lost (it was rescued elsewhere: this worker was paused or cut off
past its lease) is stopped here and its outcome is never written: the rescue stands.
"""

from __future__ import annotations

import asyncio
import logging

from conveyor.backends.base import Backend, HeartbeatParams
from conveyor.engine import Engine
from conveyor.errors import BackendError
from conveyor.worker.executor import Executor

__all__ = ["Heartbeat"]

log = logging.getLogger("conveyor")


class Heartbeat:
    def __init__(self, engine: Engine, executor: Executor):
        self.engine = engine
        self.executor = executor

    async def run(self, backend: Backend, done: asyncio.Event) -> None:
        """Beat every ``heartbeat_interval`` and poll cancels every second (or faster)
        until ``done`` is set; a failed call is logged and tried again next tick."""
        settings = self.engine.settings
        tick = min(1.0, settings.heartbeat_interval)
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + settings.heartbeat_interval
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), tick)
                return
            except TimeoutError:
                pass
            if not self.executor.running:
                next_beat = loop.time() + settings.heartbeat_interval
                continue
            try:
                if loop.time() >= next_beat:
                    next_beat = loop.time() + settings.heartbeat_interval
                    await self.beat(backend)
                else:
                    for job_id in await backend.cancel_requests(self.executor.live_ids()):
                        self.executor.stop(job_id, "cancel")
            except BackendError as exc:
                log.warning("heartbeat failed: %s", exc)

    async def beat(self, backend: Backend) -> None:
        now = self.engine.clock.now()
        result = await backend.heartbeat(
            HeartbeatParams(
                jobs=self.executor.leases(),
                now=now,
                lease_expires_at=now + self.engine.settings.lease,
            )
        )
        for job_id in result.lost:
            running = self.executor.running.get(job_id)
            # A handler that already returned has its outcome in flight: a lease found
            # gone then is (most likely) that outcome landing first, not a rescue; the
            # fenced write tells which, and says so if it was refused.
            if running is not None and running.live:
                log.warning("job %s: lease lost (rescued elsewhere); abandoning this run", job_id)
                self.executor.stop(job_id, "lost")
        for job_id in result.cancel_requested:
            self.executor.stop(job_id, "cancel")

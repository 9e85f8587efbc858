"""The worker registry: a running worker says who it is (id, host, pid, channels,
concurrency, the jobs it runs) when it starts and again every heartbeat interval, with an
expiry one lease ahead, and says goodbye when it stops. ``queue.workers()``, ``conveyor
workers``, the dashboard and the MCP server read it; a worker that dies without a goodbye
drops out once its lease has passed."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from conveyor.backends.base import Backend, WorkerRecord
from conveyor.engine import Engine
from conveyor.errors import BackendError
from conveyor.worker.executor import Executor

__all__ = ["Registry"]

log = logging.getLogger("conveyor")


class Registry:
    def __init__(
        self,
        engine: Engine,
        worker_id: str,
        channels: tuple[str, ...] | None,
        concurrency: int,
        executor: Executor,
    ):
        self.engine = engine
        self.worker_id = worker_id
        self.channels = channels
        self.concurrency = concurrency
        self.executor = executor
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = engine.clock.now()

    def record(self) -> WorkerRecord:
        now = self.engine.clock.now()
        return WorkerRecord(
            id=self.worker_id, host=self.host, pid=self.pid, channels=self.channels,
            concurrency=self.concurrency, running=tuple(sorted(self.executor.live_ids())),
            started_at=self.started_at, last_seen=now,
            expires_at=now + self.engine.settings.lease,
        )  # fmt: skip

    async def run(self, backend: Backend, done: asyncio.Event) -> None:
        """Register now and every heartbeat interval until ``done``; then say goodbye."""
        interval = self.engine.settings.heartbeat_interval
        try:
            while True:
                try:
                    await backend.register_worker(self.record())
                except BackendError as exc:
                    log.warning("worker registry update failed: %s", exc)
                try:
                    await asyncio.wait_for(done.wait(), interval)
                    return
                except TimeoutError:
                    pass
        finally:
            try:
                await asyncio.wait_for(asyncio.shield(backend.remove_worker(self.worker_id)), 5)
            except (BackendError, TimeoutError):
                pass  # its record expires with its lease

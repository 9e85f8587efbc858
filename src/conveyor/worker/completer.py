"""Records outcomes in batches: whatever finished while the last write was in flight
goes in the next one, so batching grows with load and adds no latency when idle."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from conveyor.backends.base import Backend, LogEntry, Outcome
from conveyor.errors import BackendError

if TYPE_CHECKING:
    pass

__all__ = ["Completer"]

log = logging.getLogger("conveyor")

MAX_BATCH = 1000
Done = Callable[[Outcome, bool], None]


class Completer:
    """Buffers fenced outcomes and writes them with ``complete_many``; never drops one:
    a failed write is retried with backoff until it lands or the worker is killed (then
    the lease expires and the job is rescued)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._pending: list[tuple[Outcome, list[LogEntry], Done]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    def submit(self, outcome: Outcome, logs: list[LogEntry], done: Done) -> None:
        self._pending.append((outcome, logs, done))
        self._idle.clear()
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        delay = 0.05
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(0)  # let outcomes finishing in this same tick join the batch
            batch = self._pending[:MAX_BATCH]
            try:
                logs = [entry for _, entries, _ in batch for entry in entries]
                if logs:
                    await self.backend.append_logs(logs)
                applied = await self.backend.complete_many([o for o, _, _ in batch])
            except BackendError as exc:
                log.warning(
                    "recording %d outcomes failed (%s); retrying in %.2fs", len(batch), exc, delay
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            del self._pending[: len(batch)]
            for (outcome, _, done), ok in zip(batch, applied, strict=True):
                done(outcome, ok)
            if not self._pending:
                self._idle.set()

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        await self._idle.wait()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

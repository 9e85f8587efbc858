"""Records outcomes in batches: whatever finished while the last write was in flight
goes in the next one, so batching grows with load and adds no latency when idle.

While the worker's fetcher is busy claiming (``handoff``), the completer leaves pending
outcomes to it: the fetcher sends them with its next claim in one round trip
(``Backend.complete_and_claim``). When the fetcher idles (an empty queue, a backoff, a
stop), the completer writes them itself with ``complete_many``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from conveyor.backends.base import Backend, LogEntry, Outcome
from conveyor.errors import BackendError

__all__ = ["Batch", "Completer"]

log = logging.getLogger("conveyor")

MAX_BATCH = 1000
Done = Callable[[Outcome, bool], None]
Batch = list[tuple[Outcome, list[LogEntry], Done]]


class Completer:
    """Buffers fenced outcomes until they are written; never drops one: a failed write
    is retried with backoff until it lands or the worker is killed (then the lease
    expires and the job is rescued)."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._pending: Batch = []
        self._inflight = 0  # outcomes taken for a write that has not settled yet
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._handoff = False

    def submit(self, outcome: Outcome, logs: list[LogEntry], done: Done) -> None:
        self._pending.append((outcome, logs, done))
        self._idle.clear()
        if not self._handoff:
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending) + self._inflight

    def set_handoff(self, on: bool) -> None:
        """While on, pending outcomes wait for the fetcher's next claim (:meth:`take`)."""
        self._handoff = on
        if not on and self._pending:
            self._wake.set()

    def take(self) -> Batch:
        """Remove and return up to MAX_BATCH pending outcomes for the caller to write;
        the caller must :meth:`settle` them, or :meth:`put_back` them when the write
        failed."""
        batch = self._pending[:MAX_BATCH]
        del self._pending[: len(batch)]
        self._inflight += len(batch)
        return batch

    def put_back(self, batch: Batch) -> None:
        """A write of ``batch`` failed (nothing of it applied): write it again later."""
        self._pending[:0] = batch
        self._inflight -= len(batch)
        self._wake.set()

    def settle(self, batch: Batch, applied: list[bool]) -> None:
        """``batch`` was written: report each outcome to its callback."""
        self._inflight -= len(batch)
        for (outcome, _, done), ok in zip(batch, applied, strict=True):
            done(outcome, ok)
        if not self._pending and not self._inflight:
            self._idle.set()

    async def write_logs(self, batch: Batch) -> None:
        """Store the log lines of ``batch`` (once: a retried write does not repeat them)."""
        logs = [entry for _, entries, _ in batch for entry in entries]
        if logs:
            await self.backend.append_logs(logs)
            for _, entries, _ in batch:
                entries.clear()

    async def run(self) -> None:
        delay = 0.05
        while True:
            if not self._pending or self._handoff:
                if self._stopping and not self._pending:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(0)  # let outcomes finishing in this same tick join the batch
            if self._handoff:
                continue
            batch = self.take()
            try:
                await self.write_logs(batch)
                applied = await self.backend.complete_many([o for o, _, _ in batch])
            except BackendError as exc:
                self.put_back(batch)
                log.warning(
                    "recording %d outcomes failed (%s); retrying in %.2fs", len(batch), exc, delay
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05
            self.settle(batch, applied)

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        await self._idle.wait()

    def stop(self) -> None:
        self._stopping = True
        self._handoff = False
        self._wake.set()

"""The one place a worker writes its jobs' outcomes.

Outcomes are recorded in batches: whatever finished while the last write was in flight
goes in the next one, so batching grows with load and adds no latency when idle. Every
write goes through :meth:`Completer._write`, by one of two callers:

- the fetcher's :meth:`Completer.exchange`: pending outcomes ride with its next claim in
  one round trip (``Backend.complete_and_claim``);
- the completer's own loop (:meth:`Completer.run`), which writes them with
  ``complete_many`` whenever the fetcher is not about to claim (an empty queue, a
  backoff, a stop).

While the fetcher is claiming it *holds* the outcomes (:meth:`Completer.hold`), so the
loop leaves them to the exchange. An outcome is taken out of the pending list before it
is written and put back only when the write failed, so it is never written twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from conveyor.backends.base import Backend, ClaimedJob, ClaimParams, LogEntry, Outcome
from conveyor.errors import BackendError

__all__ = ["Batch", "Completer", "Done"]

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
        self._held = False

    def submit(self, outcome: Outcome, logs: list[LogEntry], done: Done) -> None:
        """Queue an outcome (and its log lines); ``done(outcome, applied)`` is called once
        it is written."""
        self._pending.append((outcome, logs, done))
        self._idle.clear()
        if not self._held:
            self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending) + self._inflight

    def hold(self, on: bool) -> None:
        """While on, pending outcomes wait for the fetcher's next :meth:`exchange`."""
        self._held = on
        if not on and self._pending:
            self._wake.set()

    async def exchange(self, claim: ClaimParams) -> list[ClaimedJob]:
        """Claim jobs, writing the pending outcomes in the same round trip; returns the
        claimed jobs. On failure nothing was applied and the outcomes stay pending."""
        return await self._write(self._take(), claim)

    async def _write(self, batch: Batch, claim: ClaimParams | None) -> list[ClaimedJob]:
        """The only write of outcomes: ``batch`` (with ``claim``, if given) in one call."""
        jobs: list[ClaimedJob] = []
        try:
            if batch:
                logs = [entry for _, entries, _ in batch for entry in entries]
                if logs:
                    await self.backend.append_logs(logs)
                    for _, entries, _ in batch:
                        entries.clear()  # stored: a retried write does not repeat them
            outcomes = [o for o, _, _ in batch]
            if claim is None:
                applied = await self.backend.complete_many(outcomes)
            elif batch:
                applied, jobs = await self.backend.complete_and_claim(outcomes, claim)
            else:
                return await self.backend.claim(claim)
        except BaseException:
            if batch:
                self._put_back(batch)
            raise
        self._settle(batch, applied)
        return jobs

    def _take(self) -> Batch:
        batch = self._pending[:MAX_BATCH]
        del self._pending[: len(batch)]
        self._inflight += len(batch)
        return batch

    def _put_back(self, batch: Batch) -> None:
        self._pending[:0] = batch
        self._inflight -= len(batch)
        self._wake.set()

    def _settle(self, batch: Batch, applied: list[bool]) -> None:
        self._inflight -= len(batch)
        for (outcome, _, done), ok in zip(batch, applied, strict=True):
            done(outcome, ok)
        if not self._pending and not self._inflight:
            self._idle.set()

    async def run(self) -> None:
        delay = 0.05
        while True:
            if not self._pending or self._held:
                if self._stopping and not self._pending:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(0)  # let outcomes finishing in this same tick join the batch
            if self._held:
                continue
            batch = self._take()
            try:
                await self._write(batch, None)
            except BackendError as exc:
                log.warning(
                    "recording %d outcomes failed (%s); retrying in %.2fs", len(batch), exc, delay
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.05

    async def drain(self) -> None:
        """Wait until everything submitted so far is written."""
        await self._idle.wait()

    def stop(self) -> None:
        """Write what is pending, then let :meth:`run` return."""
        self._stopping = True
        self._held = False
        self._wake.set()

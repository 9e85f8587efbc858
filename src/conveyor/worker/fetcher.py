"""The fetcher: claims jobs for free slots only, and hands them to the executor.

In a busy worker each claim carries the outcomes finished since the last one (one round
trip for both, through the completer). A claim that comes back short means the queue is
empty for this worker: it then waits for a wake-up, a freed slot or the jittered poll,
with its free slots standing as a claim that a backend able to hand jobs over fills.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid

from conveyor.backends.base import Backend, ClaimedJob, ClaimParams
from conveyor.engine import Engine
from conveyor.errors import BackendError
from conveyor.worker.completer import Completer
from conveyor.worker.executor import Executor

__all__ = ["Fetcher", "JobSelector"]

log = logging.getLogger("conveyor")


class JobSelector:
    """Which jobs a worker takes: its channels (None: all) and job names, and whether
    in claim order (``ordered=False``: any due ones, for throughput)."""

    __slots__ = ("channels", "exclude", "include", "ordered")

    def __init__(
        self,
        channels: tuple[str, ...] | None,
        include: tuple[str, ...] | None,
        exclude: tuple[str, ...] | None,
        ordered: bool = True,
    ):
        self.channels, self.include, self.exclude = channels, include, exclude
        self.ordered = ordered


class Fetcher:
    def __init__(
        self,
        engine: Engine,
        worker_id: str,
        selector: JobSelector,
        executor: Executor,
        completer: Completer,
        stopping: asyncio.Event,
    ):
        self.engine = engine
        self.worker_id = worker_id
        self.selector = selector
        self.executor = executor
        self.completer = completer
        self.stopping = stopping
        self._newborn = False

    def claim_params(self, limit: int) -> ClaimParams:
        now = self.engine.clock.now()
        limits, fair = self.engine.claim_rules()
        return ClaimParams(
            worker_id=self.worker_id,
            token=uuid.uuid4().hex,
            limit=limit,
            now=now,
            lease_expires_at=now + self.engine.settings.lease,
            channels=self.selector.channels,
            include=self.selector.include,
            exclude=self.selector.exclude,
            ordered=self.selector.ordered,
            limits=limits,
            fair=fair,
        )

    async def run(self, backend: Backend) -> None:
        """Claim jobs for free slots until stopped, one claim at a time."""
        completer, executor = self.completer, self.executor
        poll = self.engine.settings.poll_interval
        backoff = 0.1
        try:
            while not self.stopping.is_set():
                # let jobs finishing in this tick free their slots (and hand over their
                # outcomes) first
                completer.hold(True)
                await asyncio.sleep(0)
                free = executor.free
                if free <= 0:
                    await executor.wait_for_slot()
                    continue
                try:
                    jobs = await completer.exchange(self.claim_params(free))
                    backoff = 0.1
                except BackendError as exc:
                    completer.hold(False)
                    log.warning("claiming jobs failed: %s; retrying in %.1fs", exc, backoff)
                    await self._sleep(backoff * random.uniform(0.5, 1.0))
                    backoff = min(backoff * 2, 10.0)
                    continue
                for job in jobs:
                    executor.launch(job)
                if len(jobs) < free and not self.stopping.is_set():
                    completer.hold(False)
                    # the free slots stand as a claim while we wait: a backend that can
                    # hand jobs over claims them for us and returns them (they are ours
                    # to run, also when stopping, like the jobs running)
                    standing = self.claim_params(executor.free)
                    try:
                        handed = await backend.wait_for_work(
                            poll * random.uniform(0.8, 1.0), standing
                        )
                    except BackendError as exc:
                        log.warning("waiting for work failed: %s", exc)
                        await self._sleep(backoff)
                        continue
                    for job in handed:
                        executor.launch(job)
        finally:
            completer.hold(False)

    async def run_due(self, born_after: float) -> None:
        """Claim and run what is due now, until nothing is (``worker.run_once``). A job
        created after ``born_after`` is given back untouched and ends the run, so a job
        that enqueues more work cannot keep it going forever."""
        completer, executor = self.completer, self.executor
        self._newborn = False
        while not self.stopping.is_set() and not self._newborn:
            free = executor.free
            jobs = await self._claim_due(free, born_after) if free > 0 else []
            if not jobs and executor.busy == 0:
                # Outcomes still in flight may requeue a job that is due now.
                await completer.drain()
                if self._newborn or not await self._claim_due(free, born_after):
                    return
                continue
            if not jobs:
                await executor.wait_for_slot()

    async def _claim_due(self, limit: int, born_after: float) -> list[ClaimedJob]:
        """Claim and launch; a job born after ``born_after`` goes back to queued with its
        attempt refunded, and marks the run as done."""
        params = self.claim_params(limit)
        started = []
        for job in await self.completer.exchange(params):
            if job.created_at > born_after:
                self._newborn = True
                self.executor.refund(job, params.now)
                continue
            self.executor.launch(job)
            started.append(job)
        return started

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

"""The maintenance pass, safe to run in every process at once.

Each duty is idempotent or a compare-and-swap, so no leader is needed for correctness:
rescuing an expired lease is fenced by its token and expiry; promotion moves rows once;
cron ticks are a compare-and-swap on the schedule's next run; pruning deletes what is
there. Pruning (the one expensive duty) additionally runs under a named lease so only one
process prunes per interval.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Callable

from conveyor import cron
from conveyor.backends.base import LockParams, Outcome, PromoteParams, PruneParams
from conveyor.engine import Engine
from conveyor.errors import BackendError
from conveyor.models import JobState
from conveyor.worker.outcome import error_record, removes_on_fail

__all__ = ["Maintenance"]

log = logging.getLogger("conveyor")

RESCUE_BATCH = 500
PROMOTE_BATCH = 5000
RESUME_BATCH = 1000
PRUNE_BATCH = 1000
PRUNE_EVERY = 30.0  # at most this long between pruning passes (under the "prune" lease)


class Maintenance:
    """One process's share of upkeep; ``run_once`` is one pass."""

    def __init__(self, engine: Engine, owner: str):
        self.engine = engine
        self.owner = owner
        # Wake-up timers for promoted jobs not yet due, by due time; each removes itself
        # when it fires (they all fire within one sweep interval).
        self._wakes: dict[float, asyncio.TimerHandle] = {}
        self._last_prune = float("-inf")
        # Prune about as often as the shortest retention asks (a 1 s keep_completed is
        # honoured within a sweep or two), never more often than a sweep, at most every 30 s.
        settings = engine.settings
        shortest = min(settings.keep_completed, settings.keep_failed)
        self.prune_every = min(PRUNE_EVERY, max(settings.sweep_interval, shortest))

    async def run(self, done: asyncio.Event) -> None:
        """A pass every ``sweep_interval`` (jittered) until ``done`` is set; a failed pass
        is logged and the next one comes on time."""
        interval = self.engine.settings.sweep_interval
        try:
            while not done.is_set():
                try:
                    await self.run_once()
                except BackendError as exc:
                    log.warning("maintenance pass failed: %s", exc)
                try:
                    await asyncio.wait_for(done.wait(), interval * random.uniform(0.8, 1.2))
                    return
                except TimeoutError:
                    pass
        finally:
            for handle in self._wakes.values():
                handle.cancel()
            self._wakes.clear()

    async def run_once(self, force: bool = False) -> None:
        backend = await self.engine.ready()
        now = self.engine.clock.now()
        await self.engine.refresh_limits(backend)
        await self.rescue(now)
        await self.promote(now)
        await cron.fire_due(self.engine, backend, now)
        await self.resume(now)
        due = now - self._last_prune >= self.prune_every
        if force or (
            due
            and await backend.acquire_lock(LockParams("prune", self.owner, self.prune_every, now))
        ):
            self._last_prune = now
            await self.prune(now)

    async def rescue(self, now: float) -> int:
        """Expired leases: the worker died or lost the store, which is not the job's fault.
        Every rescue counts a stall (``stalls + 1``); ``attempts`` keeps counting the run
        (runs started), and as retries are bounded by ``attempts - stalls``
        (``outcome.classify``), the run uses up no attempt. A requested cancel ends
        cancelled; up to ``max_stalls`` rescues go back to queued; one more fails the job
        with error type ``Stalled``."""
        backend = await self.engine.ready()
        expired = await backend.expired_leases(now, RESCUE_BATCH)
        if not expired:
            return 0
        outcomes = []
        for lease in expired:
            stalls = lease.stalls + 1  # with this one
            type_, message = (
                "LeaseExpired",
                "the worker stopped renewing its lease (crashed, killed or cut off from "
                "the store); the job was rescued",
            )
            if lease.cancel_requested:
                state, event = JobState.CANCELLED, "cancelled"
            elif lease.stalls < lease.max_stalls:
                state, event = JobState.QUEUED, "stalled"
            else:
                state, event = JobState.FAILED, "stalled"
                type_, message = (
                    "Stalled",
                    f"its worker died {stalls} time{'s' * (stalls != 1)} while running it, "
                    f"one more than max_stalls={lease.max_stalls} allows (crashed, killed "
                    "or cut off from the store: its lease expired)",
                )
            record = error_record(lease.attempts, None, now, type_=type_, message=message)
            outcomes.append(
                Outcome(
                    job_id=lease.id,
                    token=lease.token,
                    state=state,
                    at=now,
                    event=event,
                    run_at=now,
                    error=json.dumps(record),
                    stall=True,
                    expired_before=now,
                    remove=state is JobState.FAILED and removes_on_fail(lease.options),
                    event_data=json.dumps({"final_state": state.value, "stalls": stalls}),
                    attempt=lease.attempts,
                )
            )
        applied = await backend.complete_many(outcomes)
        count = 0
        for lease, outcome, ok in zip(expired, outcomes, applied, strict=True):
            if not ok:
                continue
            count += 1
            log.warning(
                "job %s (%s) attempt %d: lease expired (stall %d, max_stalls %d); now %s",
                lease.id,
                lease.name,
                lease.attempts,
                lease.stalls + 1,
                lease.max_stalls,
                outcome.state.value,
            )
            data = {"error": json.loads(outcome.error)} if outcome.error else {}
            self.engine.emit(
                outcome.event, lease.id, lease.name, lease.tenant, lease.attempts, data
            )
            if outcome.state is JobState.FAILED:
                self.engine.emit("failed", lease.id, lease.name, lease.tenant, lease.attempts, data)
                if outcome.remove:
                    self.engine.emit("removed", lease.id, lease.name, lease.tenant, lease.attempts)
        return count

    async def promote(self, now: float) -> int:
        """Scheduled jobs due within the next sweep become queued now; this process's
        fetcher is woken at the exact time the earliest of them is due."""
        backend = await self.engine.ready()
        horizon = self.engine.settings.sweep_interval
        promoted = await backend.promote_due(PromoteParams(now, horizon, PROMOTE_BATCH))
        at = promoted.earliest_future
        if at is not None and at not in self._wakes:
            loop = asyncio.get_running_loop()
            self._wakes[at] = loop.call_later(max(0.0, at - now), self._woken, at, backend.wake)
        return promoted.count

    def _woken(self, at: float, wake: Callable[[], None]) -> None:
        self._wakes.pop(at, None)
        wake()

    async def resume(self, now: float) -> int:
        """Durable waits that are over: sleeps whose end has come, and token waits whose
        token timed out (the token expires; the wait returns ``ok=False``). Their jobs go
        back to ``queued``, each exactly once however many processes run this."""
        total = 0
        for _ in range(10):  # at most 10 batches per pass
            n = await self.engine.resume_due(now, RESUME_BATCH)
            total += n
            if n < RESUME_BATCH:
                break
        if total:
            (await self.engine.ready()).wake()  # this process's idle fetcher claims them now
        return total

    async def prune(self, now: float) -> int:
        """Retention: completed jobs after keep_completed, failed and cancelled ones after
        keep_failed, in bounded batches."""
        backend = await self.engine.ready()
        settings = self.engine.settings
        total = 0
        for state, keep in (
            (JobState.COMPLETED, settings.keep_completed),
            (JobState.FAILED, settings.keep_failed),
            (JobState.CANCELLED, settings.keep_failed),
        ):
            if keep == math.inf:
                continue  # kept until clean() removes them
            for _ in range(10):  # at most 10 batches per state per pass
                result = await backend.prune(PruneParams(state, now - keep, PRUNE_BATCH))
                n = self.engine.announce_removed(result, "retention")
                total += n
                if n < PRUNE_BATCH:
                    break
        return total

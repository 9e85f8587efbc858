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

A write that fails for a reason that may pass (the store is unreachable: a transient
:class:`BackendError`) is retried, with backoff, until it lands. One that the store
refuses (any other error: it would fail again) is never retried as it is: the batch is
written outcome by outcome, so the good ones land, and an outcome the store still refuses
is replaced by a ``failed`` outcome that says why (``OutcomeNotStored``). One bad outcome
never holds up the others, nor the jobs queued behind them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable

from conveyor.backends.base import Backend, ClaimedJob, ClaimParams, LogEntry, Outcome
from conveyor.errors import BackendError
from conveyor.models import JobState
from conveyor.worker.outcome import error_record

__all__ = ["Batch", "Completer", "Done", "not_stored", "transient"]

log = logging.getLogger("conveyor")

MAX_BATCH = 1000
Done = Callable[[Outcome, bool], None]
Batch = list[tuple[Outcome, list[LogEntry], Done]]


def transient(exc: BaseException) -> bool:
    """Whether a failed write may succeed if tried again (a transient BackendError)."""
    return isinstance(exc, BackendError) and exc.transient


def not_stored(outcome: Outcome, exc: Exception) -> Outcome:
    """What to store instead of an outcome the store refused: the attempt fails, saying
    why; it is not retried (the same outcome would be refused again)."""
    record = error_record(
        outcome.attempt or 0,
        None,
        outcome.at,
        type_="OutcomeNotStored",
        message=f"the store refused this attempt's {outcome.event} outcome: "
        f"{type(exc).__name__}: {exc}",
    )
    return Outcome(
        job_id=outcome.job_id,
        token=outcome.token,
        state=JobState.FAILED,
        at=outcome.at,
        event="failed",
        error=json.dumps(record),
        expired_before=outcome.expired_before,
    )


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
                await self._write_logs(batch)
            outcomes = [o for o, _, _ in batch]
            if claim is None:
                applied = await self.backend.complete_many(outcomes)
            elif batch:
                applied, jobs = await self.backend.complete_and_claim(outcomes, claim)
            else:
                return await self.backend.claim(claim)
        except Exception as exc:
            if not batch or transient(exc):
                if batch:
                    self._put_back(batch)
                raise
            await self._isolate(batch, exc)
            return await self.backend.claim(claim) if claim is not None else []
        except BaseException:
            if batch:
                self._put_back(batch)
            raise
        self._settle(batch, applied)
        return jobs

    async def _write_logs(self, batch: Batch) -> None:
        logs = [entry for _, entries, _ in batch for entry in entries]
        if logs:
            await self.backend.append_logs(logs)
            for _, entries, _ in batch:
                entries.clear()  # stored: a retried write does not repeat them

    async def _isolate(self, batch: Batch, exc: Exception) -> None:
        """The store refused ``batch``: write it outcome by outcome, so one bad outcome
        cannot hold back the rest. A transient failure meanwhile puts back what is left
        and raises (it is retried like any write)."""
        log.warning(
            "the store refused a batch of %d outcome(s) (%s: %s); writing them one by one",
            len(batch),
            type(exc).__name__,
            exc,
        )
        for i, item in enumerate(batch):
            try:
                written, applied = await self._write_alone(item)
            except BaseException:
                self._put_back(batch[i:])
                raise
            # report what was written: a refused outcome's replacement, not the outcome
            self._settle([(written, item[1], item[2])], [applied])

    async def _write_alone(
        self, item: tuple[Outcome, list[LogEntry], Done]
    ) -> tuple[Outcome, bool]:
        """Write one outcome (and its logs); returns what was written and whether it
        applied: the outcome itself, or the failure that replaces a refused one."""
        outcome, logs, _ = item
        if logs:
            try:
                await self._write_logs([item])
            except Exception as exc:
                if transient(exc):
                    raise
                log.error("job %s: its log lines could not be stored: %s", outcome.job_id, exc)
                logs.clear()
        try:
            return outcome, (await self.backend.complete_many([outcome]))[0]
        except Exception as exc:
            if transient(exc):
                raise
            refused = exc
        log.error(
            "job %s: the store refused its outcome %r (%s); failing the job instead",
            outcome.job_id,
            outcome.event,
            refused,
        )
        failure = not_stored(outcome, refused)
        try:
            return failure, (await self.backend.complete_many([failure]))[0]
        except Exception as exc:
            if transient(exc):
                raise
            log.error(
                "job %s: not even its failure could be stored (%s); its lease will expire "
                "and it will be rescued",
                outcome.job_id,
                exc,
            )
            return failure, False

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

"""The outcomes a backend is writing, so that a heartbeat never reports a job as lost
because its own outcome was just written.

A worker keeps a job until its outcome is written, and its heartbeat renews every job it
keeps, so a heartbeat often carries a job whose outcome the completer is writing at that
moment. The two are script calls on different connections: Redis may run the outcome
first, and ``heartbeat.lua`` then finds the job no longer running under its token and
reports it lost, which the core reads as "rescued elsewhere" (a false warning, and a stop
request for a run that already ended). :class:`InFlight` tells the heartbeat which of the
jobs it found gone were finished by this backend's own writes: those that a write in
flight during the heartbeat applied, waiting for a write still in flight when the
heartbeat's reply came. A rescue's outcome (``expired_before`` set) never counts: a job
rescued under its worker is lost.

This costs the hot path no round trip: a write registers itself in a set, and only a
heartbeat that found a job gone looks at the writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from conveyor.backends.base import Outcome

__all__ = ["InFlight", "Write"]


class Write:
    """One outcome write in flight."""

    __slots__ = ("_ended", "applied", "outcomes")

    def __init__(self, outcomes: Sequence[Outcome]) -> None:
        self.outcomes = outcomes
        self.applied: Sequence[bool] | None = None  # once it ended, if it succeeded
        self._ended: asyncio.Future[None] | None = None  # made only when waited for

    def finishes(self, job_id: int, token: str) -> bool:
        """Whether this write holds the worker's own outcome of ``job_id`` under
        ``token`` (not a rescue's)."""
        return any(
            o.job_id == job_id and o.token == token and o.expired_before is None
            for o in self.outcomes
        )

    async def ended(self) -> None:
        """Return once this write has ended (however it ended)."""
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._ended)

    def end(self, applied: Sequence[bool] | None) -> None:
        self.applied = applied
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(None)


class InFlight:
    """The outcome writes of one backend that are in flight, and the heartbeats that
    watch them."""

    def __init__(self) -> None:
        self._writes: set[Write] = set()
        #: per heartbeat in flight: (job id, token) its writes applied meanwhile
        self._watching: list[set[tuple[int, str]]] = []

    def begin(self, outcomes: Sequence[Outcome]) -> Write:
        """Register a write of ``outcomes`` about to be sent."""
        write = Write(outcomes)
        self._writes.add(write)
        return write

    def end(self, write: Write, applied: Sequence[bool] | None) -> None:
        """The write ended: ``applied`` per outcome, or None if it failed."""
        self._writes.discard(write)
        if applied is not None and self._watching:
            done = {
                (o.job_id, o.token)
                for o, ok in zip(write.outcomes, applied, strict=False)
                if ok and o.expired_before is None
            }
            for seen in self._watching:
                seen |= done
        write.end(applied)

    def watch(self) -> set[tuple[int, str]]:
        """Start watching for a heartbeat about to be sent: the set fills with the
        outcomes applied until :meth:`unwatch`."""
        seen: set[tuple[int, str]] = set()
        self._watching.append(seen)
        return seen

    def unwatch(self, seen: set[tuple[int, str]]) -> None:
        self._watching.remove(seen)

    async def lost(
        self, gone: Iterable[int], jobs: Sequence[tuple[int, str]], seen: set[tuple[int, str]]
    ) -> frozenset[int]:
        """Of the jobs a heartbeat (watching ``seen``) found no longer running under
        their token, those that no outcome of this backend finished: the others were
        finished by their own worker, not lost. Waits for a write still in flight that
        holds such an outcome."""
        tokens = dict(jobs)
        lost: set[int] = set()
        for job_id in gone:
            token = tokens.get(job_id)
            if token is None:
                lost.add(job_id)
                continue
            pair = (job_id, token)
            if pair not in seen:
                write = next((w for w in self._writes if w.finishes(job_id, token)), None)
                if write is not None:
                    await write.ended()  # its end() added the pair to seen if it applied
            if pair not in seen:
                lost.add(job_id)
        return frozenset(lost)

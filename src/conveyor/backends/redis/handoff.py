"""Direct hand-off: an idle worker's standing claim, served by the enqueue itself.

When ``wait_for_work`` is given the worker's :class:`~conveyor.backends.base.ClaimParams`,
the wait sends these commands in one write on its blocking connection:

1. ``HSET P waiters <waiter> <registration>``: the standing claim (token, worker, limit,
   filters, lease length, and an expiry: see below);
2. ``BZPOPMIN P hand:<waiter> <markers…> <timeout>``;
3. ``HDEL P waiters <waiter>``, ``ZPOPMIN P hand:<waiter> <many>``: the release, which
   takes whatever was handed over but not popped (a hand-off that raced with a marker, a
   timeout or ``wake()``).

An enqueue that stores a due job this worker's claim would take right now (the hand-off
rules in ``_lib_worker.lua``) stores it as claimed by the worker, in the same script and with
the same fields, indexes and ``started`` event as ``claim.lua``, and adds it to
``P hand:<waiter>``; the pop returns it, so the job reaches the worker in the pop's reply
without a claim round trip. Redis runs the release as soon as the pop returns, before it
sends the replies, so ending a wait costs no extra round trip either. The release needs
no script: only a registered waiter is handed jobs, so once ``HDEL`` ran nothing more can
arrive, and ``ZPOPMIN`` takes (and removes, in one step) what arrived before. A
registration is used up by its hand-off, so the key holds at most one member at a time.

Nothing is lost when a wait ends abnormally. If the replies are lost (the connection
dropped, or the wait was cancelled), the registration may outlive the wait until its
expiry: the next wait first releases it through the lane with ``wait_release.lua``, which
returns what was handed over meanwhile and is still running under its token (not
rescued), its lease renewed as a new claim's would be; ``close`` gives such jobs back
instead (queued again where they were, their attempt refunded: they never ran).

A hand-off never outlives the waiter that can run it. Handed-over jobs are stored as
``running`` with a lease, and nobody renews that lease until the waiter has them, so:

* a registration stands for the wait, but at most half the lease it hands out
  (:func:`window`): everything handed under it has at least half a lease left when it
  lapses;
* a waiter whose wait failed (its connection was killed, say) releases at once (the lane
  reconnects), and while it cannot, it comes back to try again within that window
  (:class:`~conveyor.backends.redis.wakeup.Waker`), never after a whole poll interval.

So a live waiter that can reach Redis collects every job handed to it before the job's
lease runs out. Only a waiter that died, or lost the store, leaves handed jobs behind:
they are rescued when their leases expire, like the jobs of a lost claim reply, and a
registration it left behind attracts jobs for at most half a lease.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from conveyor.backends.base import ClaimedJob, ClaimParams
from conveyor.backends.redis import codec
from conveyor.backends.redis.keys import Keys
from conveyor.backends.redis.lane import Lane, pack
from conveyor.errors import BackendError

__all__ = ["HandOff"]

log = logging.getLogger("conveyor")

REPLIES = 4
"""Replies to :meth:`HandOff.commands`."""
_TAKE = "100"  # members the release pops at most (there is at most one)


def window(claim: ClaimParams, timeout: float) -> float:
    """Seconds a standing claim registered for a wait of ``timeout`` seconds stands: the
    wait, but at most half the lease it hands out (the lease of a job handed over runs
    from the hand-off, so when the registration lapses every job handed under it still
    has half a lease in which its waiter collects it)."""
    return max(min(timeout, (claim.lease_expires_at - claim.now) / 2), 0.0)


def _jobs(member: Any) -> list[ClaimedJob]:
    """The jobs of one hand-off member; none (logged) if it cannot be decoded, which only
    a foreign write could cause: its jobs are then rescued when their leases expire."""
    try:
        return codec.handed_from_member(member)
    except (TypeError, ValueError, IndexError, StopIteration) as exc:
        log.error("conveyor: a job hand-off could not be decoded (%r): %.200r", exc, member)
        return []


class HandOff:
    """The standing claims of one backend (one waiter id, reused by every wait).

    Args:
        lane: runs the release when it cannot ride with the wait.
        keys: the queue's keys.
    """

    def __init__(self, lane: Lane, keys: Keys) -> None:
        self.id = uuid.uuid4().hex
        self.key = keys.hand(self.id)
        self._waiters = keys.waiters
        self._lane = lane
        #: a registration, or jobs handed over, may still be in Redis: release first
        self.pending = False
        #: seconds the last registration stands (see :func:`window`)
        self.window = 0.0

    def commands(
        self, claim: ClaimParams, timeout: float, keys: Sequence[str], block: str
    ) -> bytes:
        """Register, pop (the hand-off key first, then ``keys``) and release, in RESP
        (:data:`REPLIES` replies)."""
        self.pending = True
        self.window = stands = window(claim, timeout)
        registration = codec.registration(claim, claim.now + stands)
        return b"".join(
            (
                pack(b"", 0, ("HSET", self._waiters, self.id, registration)),
                pack(b"", 0, ("BZPOPMIN", self.key, *keys, block)),
                pack(b"", 0, ("HDEL", self._waiters, self.id)),
                pack(b"", 0, ("ZPOPMIN", self.key, _TAKE)),
            )
        )

    def settle(self, replies: Sequence[Any]) -> list[ClaimedJob]:
        """The jobs in the replies of :meth:`commands`. Leaves :attr:`pending` set when
        the release failed (then :meth:`release` must run before the next wait)."""
        registered, popped, unregistered, taken = replies
        if isinstance(registered, Exception):  # e.g. OOM: an ordinary wait, then
            log.debug("conveyor: registering a standing claim failed: %r", registered)
        jobs: list[ClaimedJob] = []
        # BZPOPMIN: key, member, score (or nil) in RESP2 and RESP3 alike
        if isinstance(popped, list) and len(popped) > 1 and popped[0] == self.key:
            jobs += _jobs(popped[1])
        elif isinstance(popped, Exception):
            log.debug("conveyor: waiting on a standing claim failed: %r", popped)
        if not isinstance(taken, Exception):  # ZPOPMIN key n: flat (RESP2) or pairs (RESP3)
            for member in codec.zset_members(taken):
                jobs += _jobs(member)
        failed = next((r for r in (unregistered, taken) if isinstance(r, Exception)), None)
        if failed is not None:
            log.debug("conveyor: releasing a standing claim failed: %r", failed)
        else:
            self.pending = False
        return jobs

    async def release(self, now: float, lease_expires_at: float | None) -> list[ClaimedJob]:
        """End the standing claim through the lane (``wait_release.lua``); returns the
        jobs handed over that are still running under their token (not rescued), their
        leases renewed until ``lease_expires_at``. With None, gives those jobs back
        instead (queued again where they were, attempt refunded) and returns them.

        Raises:
            BackendError: Redis failed (the claim stays pending).
        """
        until = "" if lease_expires_at is None else codec.ts(lease_expires_at)
        members = await self._lane.script("wait_release", (self.id, codec.ts(now), until))
        self.pending = False
        return [job for member in members for job in _jobs(member)]

    async def try_release(
        self, now: float, lease_expires_at: float | None
    ) -> list[ClaimedJob] | None:
        """:meth:`release`, or None (logged) when Redis failed: the claim stays pending
        and the next wait or ``close`` releases it."""
        try:
            return await self.release(now, lease_expires_at)
        except BackendError as exc:
            log.debug("conveyor: releasing a standing claim failed: %s", exc)
            return None

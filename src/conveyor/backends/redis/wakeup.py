"""Blocking reads on dedicated connections: the worker wake-up and the event stream.

A blocking command (``BZPOPMIN``, ``XREAD BLOCK``) holds its connection for as long as it
waits, so it never runs on the shared connections. :class:`BlockingConnection` owns one
raw connection, made without a socket timeout: each call (connect, send, reply) is bounded
as a whole by one ``asyncio.timeout``. Any failure or cancellation while a reply is
pending drops the connection (a reply that arrives later can then never be read as the
answer to the next command) and the next call reconnects.

:class:`Waker` implements ``wait_for_work``/``wake``: one ``BZPOPMIN`` on the wake-up
markers at a time per backend, read by the waiting task itself, so a popped marker goes
straight on to the caller's claim (no helper task, no extra loop iteration). Given the
caller's claim, the pop also covers the backend's hand-off key and rides between the
registration and the release of a standing claim (:mod:`.handoff`), and the wait returns
the jobs handed over. A wait that fails while its registration may still stand (its
connection was killed) releases it at once, and while it cannot, pauses no longer than
the registration stands (half a lease at most), so that it is back to collect anything
handed to it before that could lose its lease.
``wake()`` (thread-safe) sets a flag; when a pop is pending it also ends it with
``CLIENT UNBLOCK`` from the shared connections, which keeps the blocking connection
usable (dropping it would cost a reconnect per wake-up), or, when that is not possible,
by dropping the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from conveyor.backends.base import ClaimedJob, ClaimParams
from conveyor.backends.loops import call_in_loop
from conveyor.backends.redis import handoff
from conveyor.backends.redis.handoff import HandOff

__all__ = ["BlockingConnection", "Waker"]

log = logging.getLogger("conveyor")

_MARGIN = 5.0  # seconds a blocking reply may take beyond its server-side timeout
#: pauses before each CLIENT UNBLOCK attempt of one wake-up (see Waker._end_pop)
_UNBLOCK_RETRIES = (0.0, 0.001, 0.004, 0.016)


class BlockingConnection:
    """One dedicated connection for blocking commands, reconnected after any failure.

    Args:
        factory: makes a new, unconnected connection without a socket timeout.
    """

    def __init__(self, factory: Callable[[], AbstractConnection]) -> None:
        self._factory = factory
        self._conn: AbstractConnection | None = None
        self.client_id: int | None = None

    async def _ensure(self) -> AbstractConnection:
        if self._conn is None or not self._conn.is_connected:
            await self.close()
            conn = self._factory()
            try:
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command("CLIENT", "ID")
                try:
                    self.client_id = int(await conn.read_response())
                except ResponseError:  # denied by an ACL: waits end by dropping instead
                    self.client_id = None
            except BaseException:
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)
                raise
            self._conn = conn
        return self._conn

    async def call(self, *args: Any, wait: float) -> Any:
        """Send one command and wait up to ``wait`` seconds (plus a margin, connecting
        included) for its reply."""
        try:
            async with asyncio.timeout(wait + _MARGIN):
                conn = await self._ensure()
                await conn.send_command(*args)
                return await conn.read_response()
        except BaseException:
            await self.close()
            raise

    async def call_packed(self, command: bytes, replies: int, wait: float) -> list[Any]:
        """Send ``replies`` commands packed in RESP as one write and read their replies,
        waiting up to ``wait`` seconds (plus a margin) in all. An error reply is returned
        in its place, as the exception, and the replies after it are still read."""
        try:
            async with asyncio.timeout(wait + _MARGIN):
                conn = await self._ensure()
                await conn.send_packed_command(command, check_health=False)
                out: list[Any] = []
                for _ in range(replies):
                    try:
                        out.append(await conn.read_response())
                    except ResponseError as exc:  # read in full: the connection is in sync
                        out.append(exc)
                return out
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Drop the connection (the next call reconnects); a pending read fails at once."""
        conn, self._conn, self.client_id = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


class Waker:
    """``wait_for_work`` / ``wake`` for one backend.

    Args:
        factory: makes a new, unconnected connection without a socket timeout.
        unblock: ends another client's blocking command (``CLIENT UNBLOCK <id>``); its
            reply is 1 if that client was blocked.
        retry_pause: how long to pause after the store failed, before returning.
        hand: the backend's standing claims (None: waits never take a claim).
    """

    def __init__(
        self,
        factory: Callable[[], AbstractConnection],
        unblock: Callable[[int], Awaitable[Any]],
        retry_pause: float,
        hand: HandOff | None = None,
    ) -> None:
        self._conn = BlockingConnection(factory)
        self._unblock = unblock
        self._retry_pause = retry_pause
        self._hand = hand
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()
        self._busy = False  # a task of this process is in wait(), popping
        self._pulse = asyncio.Event()  # set when that task's wait ends
        self._popping = 0  # number of the pop in flight, 0 when none
        self._pops = 0
        self._ended = 0  # number of the last pop that wake() set out to end
        self._ending: set[asyncio.Task[None]] = set()
        self._failures = 0  # waits in a row whose pop failed

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop that ``wake()`` must hand over to."""
        self._loop = loop

    def wake(self) -> None:
        """Make the current or next ``wait`` return at once (sync, thread-safe)."""
        call_in_loop(self._loop, self._on_wake)

    def _on_wake(self) -> None:
        self._woken.set()
        pop = self._popping
        if pop and self._ended != pop:
            self._ended = pop
            task = asyncio.ensure_future(self._end_pop(pop))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)

    async def _end_pop(self, pop: int) -> None:
        """End pop number ``pop`` if it is still pending: CLIENT UNBLOCK, or, if that is
        not possible (no client id, denied), drop its connection, which makes the pending
        read fail at once.

        CLIENT UNBLOCK answers 0 both when the pop has not reached the server yet and when
        it has just ended (its replies on the way, which may carry handed-over jobs: too
        precious to drop with the connection); so it is tried a few more times while the
        pop is still ours before the connection is dropped."""
        for pause in _UNBLOCK_RETRIES:
            if self._popping != pop:
                return  # it ended meanwhile
            if pause:
                await asyncio.sleep(pause)
                if self._popping != pop:
                    return
            client_id = self._conn.client_id
            if client_id is None:
                break
            try:
                if await self._unblock(client_id):
                    return
            except Exception:  # denied, or the store failed: drop the connection instead
                break
        if self._popping == pop:
            await self._conn.close()

    async def wait(
        self, keys: Sequence[str], timeout: float, claim: ClaimParams | None = None
    ) -> list[ClaimedJob]:
        """Return when a marker is popped, ``wake()`` is called, or after ``timeout``;
        with ``claim``, also when jobs are handed over under it, and return them."""
        hand = self._hand if claim is not None else None
        if self._woken.is_set():
            self._woken.clear()
            return []
        if self._busy:
            # another task of this process is already blocked: share its outcome
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._pulse.wait()
            return []
        self._busy = True
        try:
            if hand is None or claim is None:
                await self._wait(keys, timeout)
                return []
            return await self._wait_claim(hand, keys, timeout, claim)
        finally:
            self._busy = False
            self._woken.clear()
            self._pulse.set()
            self._pulse = asyncio.Event()

    async def _wait(self, keys: Sequence[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        block = max(round(timeout, 3), 0.001)  # BZPOPMIN 0 would block forever
        self._pops += 1
        self._popping = self._pops
        try:
            await self._conn.call("BZPOPMIN", *keys, f"{block:.3f}", wait=block)
            return
        except Exception as exc:
            if self._woken.is_set():
                return  # ended by wake(): not a failure
            log.debug("conveyor: wait_for_work could not block on Redis: %r", exc)
        finally:
            self._popping = 0
        await self._pause(deadline)

    async def _wait_claim(
        self, hand: HandOff, keys: Sequence[str], timeout: float, claim: ClaimParams
    ) -> list[ClaimedJob]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        if hand.pending:  # an earlier wait's claim may have been left behind
            released = await self._release(hand, claim)
            if released is None:  # it may still stand: back within its window
                await self._pause(min(deadline, loop.time() + hand.window))
                return []
            if released:
                return released
        block = max(round(timeout, 3), 0.001)  # BZPOPMIN 0 would block forever
        command = hand.commands(claim, timeout, keys, f"{block:.3f}")
        self._pops += 1
        self._popping = self._pops
        failed = False
        try:
            replies = await self._conn.call_packed(command, handoff.REPLIES, wait=block)
        except Exception as exc:
            failed = not self._woken.is_set()  # else ended by wake(): not a failure
            if failed:
                log.debug("conveyor: wait_for_work could not block on Redis: %r", exc)
            jobs = []
        else:
            jobs = hand.settle(replies)
        finally:
            self._popping = 0
        if hand.pending:  # the replies were lost, or the release failed
            released = await self._release(hand, claim)
            if released is None:
                # The registration may still stand, and jobs handed to it meanwhile wait
                # for us under a lease that nobody renews: back within its window.
                if not jobs:
                    await self._pause(min(deadline, loop.time() + hand.window))
                return jobs
            jobs += released
        if not failed:
            self._failures = 0
        else:
            # Released: nothing can be handed to us now. A first failure (a connection
            # killed) returns at once, so the caller claims and waits again; failures in
            # a row pause, so that a blocking connection that keeps failing never spins.
            self._failures += 1
            if self._failures > 1 and not jobs:
                await self._pause(deadline)
        return jobs

    async def _release(self, hand: HandOff, claim: ClaimParams) -> list[ClaimedJob] | None:
        """Release ``hand``'s standing claim, taking what was handed to it under
        ``claim``'s lease; tried twice, as a connection that died fails one call before
        the lane reconnects. None if Redis failed both times (the claim stays pending)."""
        for _ in range(2):
            released = await hand.try_release(claim.now, claim.lease_expires_at)
            if released is not None:
                return released
        return None

    async def _pause(self, deadline: float) -> None:
        """After a failure: wait for ``wake()`` at most ``retry_pause`` (and not past
        ``deadline``), so that a store that is down does not make callers spin."""
        loop = asyncio.get_running_loop()
        pause = min(self._retry_pause, max(deadline - loop.time(), 0.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause):
                await self._woken.wait()

    async def close(self) -> None:
        """Drop the blocking connection; end a standing claim left behind (its jobs, if
        any were handed over, can no longer run here: they go back to the queue, their
        attempt refunded)."""
        for task in list(self._ending):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self._conn.close()
        hand = self._hand
        if hand is not None and hand.pending:
            jobs = await hand.try_release(0.0, None)  # gives back what it was handed
            if jobs is None:
                log.warning(
                    "conveyor: could not end this worker's standing claim; jobs handed to "
                    "it, if any, will be rescued when their leases expire"
                )
            elif jobs:
                log.info(
                    "conveyor: %d job(s) handed to this worker were not started; they went "
                    "back to the queue",
                    len(jobs),
                )

"""Blocking reads on dedicated connections: the worker wake-up and the event stream.

A blocking command (``BZPOPMIN``, ``XREAD BLOCK``) holds its connection for as long as it
waits, so it never runs on the shared pool. :class:`BlockingConnection` owns one raw
connection; any failure or cancellation while a reply is pending drops it (a reply that
arrives later can then never be read as the answer to the next command) and the next
call reconnects.

:class:`Waker` implements ``wait_for_work``/``wake``: one ``BZPOPMIN`` on the wake-up
markers at a time per backend. ``wake()`` (thread-safe) sets an event; the waiter then
ends the pending pop with ``CLIENT UNBLOCK`` from the shared pool, which keeps the
blocking connection usable (cancelling the read would cost a reconnect per wake-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

__all__ = ["BlockingConnection", "Waker"]

log = logging.getLogger("conveyor")

_MARGIN = 5.0  # seconds a blocking reply may take beyond its server-side timeout


class BlockingConnection:
    """One dedicated connection for blocking commands, reconnected after any failure."""

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
        """Send one command and wait up to ``wait`` seconds (plus a margin) for its reply."""
        conn = await self._ensure()
        try:
            await conn.send_command(*args)
            return await asyncio.wait_for(conn.read_response(timeout=math.inf), wait + _MARGIN)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Drop the connection (the next call reconnects)."""
        conn, self._conn, self.client_id = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


class Waker:
    """``wait_for_work`` / ``wake`` for one backend.

    Args:
        factory: makes a new (unconnected) connection to the server.
        unblock: ends another client's blocking command (``CLIENT UNBLOCK <id>``).
        retry_pause: how long to pause after the store failed, before returning.
    """

    def __init__(
        self,
        factory: Callable[[], AbstractConnection],
        unblock: Callable[[int], Awaitable[Any]],
        retry_pause: float,
    ) -> None:
        self._conn = BlockingConnection(factory)
        self._unblock = unblock
        self._retry_pause = retry_pause
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = asyncio.Event()
        self._lock = asyncio.Lock()
        self._pulse = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Remember the loop that ``wake()`` must hand over to."""
        self._loop = loop

    def wake(self) -> None:
        """Make the current or next ``wait`` return at once (sync, thread-safe)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._woken.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._woken.set)

    async def wait(self, keys: Sequence[str], timeout: float) -> None:
        """Return when a marker is popped, ``wake()`` is called, or after ``timeout``."""
        if self._woken.is_set():
            self._woken.clear()
            return
        if self._lock.locked():
            # another task of this process is already blocked: share its outcome
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._pulse.wait(), timeout)
            return
        async with self._lock:
            try:
                await self._wait(keys, timeout)
            finally:
                self._woken.clear()
                self._pulse.set()
                self._pulse = asyncio.Event()

    async def _wait(self, keys: Sequence[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        block = max(round(timeout, 3), 0.001)  # BZPOPMIN 0 would block forever
        pop = asyncio.ensure_future(self._conn.call("BZPOPMIN", *keys, f"{block:.3f}", wait=block))
        woken = asyncio.ensure_future(self._woken.wait())
        try:
            await asyncio.wait({pop, woken}, return_when=asyncio.FIRST_COMPLETED)
            if not pop.done() and await self._try_unblock():
                await asyncio.wait({pop}, timeout=1.0)
        finally:
            woken.cancel()
            if not pop.done():
                pop.cancel()  # BlockingConnection.call drops the connection
                await asyncio.wait({pop})
        if pop.cancelled():
            return
        exc = pop.exception()
        if exc is not None:
            log.debug("conveyor: wait_for_work could not block on Redis: %r", exc)
            pause = min(self._retry_pause, max(deadline - loop.time(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), pause)

    async def _try_unblock(self) -> bool:
        """End the pending pop with CLIENT UNBLOCK; False if that is not possible (then
        the caller cancels the pop, which drops its connection)."""
        client_id = self._conn.client_id
        if client_id is None:
            return False
        try:
            return bool(await self._unblock(client_id))
        except Exception:
            return False

    async def close(self) -> None:
        """Drop the blocking connection."""
        await self._conn.close()

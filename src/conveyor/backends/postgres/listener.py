"""Wake-ups for the PostgreSQL backend: LISTEN on one dedicated connection.

Writers send one ``pg_notify(channel, payload)`` per statement that makes work available
(an enqueue batch, a promotion pass, a requeue, a retry, a resume); the payload names
channels and counts, never job data, and NOTIFY inside a caller's transaction is
delivered at commit. Each backend instance keeps one LISTEN connection outside the pool,
opened when something first waits for work or events (a process that only enqueues has
none, and does not hear its own NOTIFYs); it reconnects by itself with jittered
exponential back-off after ``pg_terminate_backend`` or a server restart, and, because
notifications sent while it was away are lost (or before it first listened), it wakes
every waiter once it is listening again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from conveyor.backends.loops import call_in_loop

__all__ = ["Listener", "Signal"]

log = logging.getLogger("conveyor")

HEALTH_INTERVAL = 5.0  # seconds of silence before the LISTEN connection is probed
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0


class Signal:
    """A wake-up that waiters share and that is not lost between waits.

    :meth:`fire` wakes every current waiter; when nobody is waiting it is remembered and
    the next :meth:`wait` returns at once. Loop-bound: call :meth:`fire` on the loop (use
    :meth:`fire_threadsafe` from other threads).
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._pending = False
        self._waiters = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def fire(self) -> None:
        if self._waiters == 0:
            self._pending = True
        event, self._event = self._event, asyncio.Event()
        event.set()

    def fire_threadsafe(self) -> None:
        """Fire from any thread (no-op before the loop is known or after it closed)."""
        call_in_loop(self.loop, self.fire)

    async def wait(self, timeout: float) -> bool:
        """True when fired (now or since the last wait), False after ``timeout``."""
        if self._pending:
            self._pending = False
            return True
        if timeout <= 0:
            return False
        event = self._event
        self._waiters += 1
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        finally:
            self._waiters -= 1
        self._pending = False
        return True


class Listener:
    """LISTEN on ``channel`` over its own connection, calling ``on_notify`` for each
    notification and ``on_connect`` each time it is listening (again)."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        on_notify: Callable[[str], None],
        on_connect: Callable[[], None],
    ):
        self.conninfo = conninfo
        self.channel = channel
        self.on_notify = on_notify
        self.on_connect = on_connect
        self.connected = False
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="conveyor-pg-listener")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        await self._close()

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        self.connected = False
        if conn is not None:
            try:
                await conn.close()
            except psycopg.Error:  # pragma: no cover - closing a dead socket
                pass

    async def _run(self) -> None:
        delay = BACKOFF_FIRST
        failures = 0
        while True:
            try:
                await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect on anything: this task must not die
                if self.connected:
                    log.warning("LISTEN connection lost (%s); reconnecting", exc)
                    delay = BACKOFF_FIRST
                failures = 0 if self.connected else failures + 1
                if failures and failures % 10 == 0:
                    log.warning("LISTEN connection still down after %d tries: %s", failures, exc)
            await self._close()
            self.reconnects += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        self._conn = conn
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        self.connected = True
        self.on_connect()  # notifications sent while we were away are lost: wake everyone
        while True:
            async for notify in conn.notifies(timeout=HEALTH_INTERVAL):
                self.on_notify(notify.payload)
            # Silence for a while: make sure the connection is alive (a half-open TCP
            # connection would otherwise never say so).
            await conn.execute("SELECT 1")

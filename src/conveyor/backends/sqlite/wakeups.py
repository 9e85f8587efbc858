"""Wake-ups of the SQLite backend: ``wake()`` and the idle wait of ``wait_for_work``.

SQLite has no notifications. A waiting worker returns when

- this process stored work a worker may want: ``wake()``, callable from any thread or
  event loop, makes every current waiter return, whatever loop it runs on (one backend
  serves them all); with nobody waiting, the next wait returns at once;
- another connection (another process) committed: ``PRAGMA data_version`` changed. It
  is read from shared memory, so it is polled: every 2 ms right after activity, every
  20 ms once nothing has woken a waiter for 2 s;
- its timeout passed.

Commits of this process's own connection do not change ``data_version``, which is why
every write that can make work due calls ``wake()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from conveyor.backends.loops import call_in_loop

__all__ = ["WakeUps"]

FAST_POLL = 0.002  # seconds between data_version reads right after activity
IDLE_POLL = 0.02  # ... once the queue has been idle for IDLE_AFTER seconds
IDLE_AFTER = 2.0


class _Waiter:
    """One ``wait()`` in progress, on its event loop."""

    __slots__ = ("event", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()

    def set(self) -> None:
        call_in_loop(self.loop, self.event.set)


class WakeUps:
    """The waiters of one backend, on any number of event loops and threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _waiters and _pending (wake() is any-thread)
        self._waiters: set[_Waiter] = set()
        self._pending = False  # a wake() found nobody waiting: the next wait returns
        self._last_activity = 0.0

    def wake(self) -> None:
        """Make every current wait return at once, or the next one if none is running."""
        with self._lock:
            waiters = tuple(self._waiters)
            if not waiters:
                self._pending = True
                return
        for waiter in waiters:
            waiter.set()

    async def wait(self, timeout: float, data_version: Callable[[], int | None]) -> None:
        """Return after ``wake()``, when ``data_version()`` changes, or after ``timeout``
        (``data_version()`` is None while the connection is closed: no change)."""
        deadline = time.monotonic() + timeout
        waiter = _Waiter(asyncio.get_running_loop())
        with self._lock:
            if self._pending:
                self._pending = False
                self._last_activity = time.monotonic()
                return
            self._waiters.add(waiter)
        try:
            seen = data_version()
            while True:
                if waiter.event.is_set():
                    self._last_activity = time.monotonic()
                    return
                now = time.monotonic()
                if now >= deadline:
                    return
                # Poll fast right after activity, slower when the queue has been idle a while.
                step = FAST_POLL if now - self._last_activity < IDLE_AFTER else IDLE_POLL
                try:
                    await asyncio.wait_for(waiter.event.wait(), min(step, deadline - now))
                except TimeoutError:
                    pass
                version = data_version()
                if version is not None and version != seen:  # None: closed meanwhile
                    self._last_activity = time.monotonic()
                    return
        finally:
            with self._lock:
                self._waiters.discard(waiter)

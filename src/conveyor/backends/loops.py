"""Calling into an event loop from any thread: the one way backends wake their waiters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["call_in_loop"]


def call_in_loop(loop: asyncio.AbstractEventLoop | None, callback: Callable[[], object]) -> None:
    """Run ``callback`` on ``loop`` from any thread or loop: at once when ``loop`` is the
    running loop, else as soon as ``loop`` gets to it. Nothing happens when there is no
    loop yet or it has closed (its waiters are gone with it)."""
    if loop is None or loop.is_closed():
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        callback()
        return
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:  # the loop closed meanwhile
        pass

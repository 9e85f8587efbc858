"""Event names and in-process dispatch (``queue.on``)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

from conveyor.errors import ValidationError
from conveyor.models import Event

__all__ = ["EVENT_TYPES", "Dispatcher", "EventCallback"]

log = logging.getLogger("conveyor")

EVENT_TYPES = frozenset(
    {
        "enqueued",
        "started",
        "progress",
        "retrying",
        "completed",
        "failed",
        "stalled",
        "cancelled",
        "waiting",
        "resumed",
        "orphaned",
        "removed",
        "cron_fired",
        "channel_paused",
        "channel_resumed",
    }
)

EventCallback = Callable[[Event], Any]


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class Dispatcher:
    """Calls the callbacks registered for an event type (or ``"*"``) in this process.

    Sync callbacks run inline; async ones are scheduled on the running loop. A callback
    that raises is logged and never disturbs the job or the worker.
    """

    def __init__(self) -> None:
        self._callbacks: dict[str, list[EventCallback]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, event_type: str, callback: EventCallback) -> None:
        if event_type != "*" and event_type not in EVENT_TYPES:
            raise ValidationError(
                f"unknown event type {event_type!r}; expected one of {sorted(EVENT_TYPES)} or '*'"
            )
        if not callable(callback):
            raise ValidationError("callback must be callable")
        self._callbacks.setdefault(event_type, []).append(callback)

    def off(self, event_type: str, callback: EventCallback) -> None:
        callbacks = self._callbacks.get(event_type, [])
        if callback in callbacks:
            callbacks.remove(callback)

    def wants(self, event_type: str) -> bool:
        return bool(self._callbacks.get(event_type) or self._callbacks.get("*"))

    def emit(self, event: Event) -> None:
        for cb in (*self._callbacks.get(event.type, ()), *self._callbacks.get("*", ())):
            try:
                result = cb(event)
                if inspect.isawaitable(result):
                    try:
                        asyncio.get_running_loop()
                    except RuntimeError:  # sync code (enqueue_sync in a script): run it now
                        asyncio.run(_awaited(result))
                        continue
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
            except Exception:
                log.exception("event callback %r failed for %s", cb, event.type)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("async event callback failed", exc_info=task.exception())

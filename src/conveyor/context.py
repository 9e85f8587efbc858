"""The Context handed to every handler: progress, logs, cancellation, timeout control."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from conveyor.errors import ValidationError

__all__ = ["Context", "Control", "JobLogger"]


class _Done:
    """An already-finished awaitable (what set_progress returns outside the event loop)."""

    def __await__(self):  # type: ignore[no-untyped-def]
        return iter(())


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_pylog = logging.getLogger("conveyor.job")


class Control:
    """The worker's side of one attempt's :class:`Context`: the handler reads it through
    the context, the executor holds it to cancel the attempt, watch its deadline and
    collect its log lines.

    Attributes:
        cancel_reason: why the attempt is being stopped (``"timeout"``, ``"cancel"``,
            ``"drain"``, ``"lost"``, ``"abort"``), or None; the first reason wins.
        deadline: the attempt's monotonic deadline (None: no timeout);
            ``ctx.extend_timeout`` moves it.
        logs: ``(at, level, message)`` lines written with ``ctx.log``, not yet stored.
        loop: the worker's event loop, for ``ctx.set_progress`` from a handler thread.
    """

    __slots__ = ("cancel_reason", "deadline", "logs", "loop", "on_timeout", "timeout")

    def __init__(
        self, deadline: float | None = None, loop: asyncio.AbstractEventLoop | None = None
    ):
        self.cancel_reason: str | None = None
        self.deadline = deadline
        self.timeout: float | None = None  # the attempt's timeout, for a reset
        self.logs: list[tuple[float, str, str]] = []
        self.loop = loop
        self.on_timeout: list[Callable[[], float | None]] = []

    def extension(self) -> float | None:
        """Ask the ``ctx.on_timeout`` callbacks, in order, whether to extend; the first
        that returns seconds > 0 wins. A callback that raises counts as "no"."""
        for callback in self.on_timeout:
            try:
                seconds = callback()
            except Exception:
                _pylog.exception("an on_timeout callback failed; the job times out")
                continue
            if isinstance(seconds, timedelta):
                seconds = seconds.total_seconds()
            if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds > 0:
                return float(seconds)
        return None

    def cancel(self, reason: str) -> None:
        """Mark the attempt as stopping for ``reason`` (the first reason wins)."""
        if self.cancel_reason is None:
            self.cancel_reason = reason


class JobLogger:
    """``ctx.log``: lines stored with the job (``queue.get_job_logs``) and also sent to the
    ``conveyor.job`` Python logger."""

    __slots__ = ("_clock", "_control", "_job_id", "_name")

    def __init__(self, name: str, job_id: int, clock: Callable[[], float], control: Control):
        self._name, self._job_id, self._clock, self._control = name, job_id, clock, control

    def _write(self, level: str, message: object, *args: object) -> None:
        text = str(message) % args if args else str(message)
        self._control.logs.append((self._clock(), level, text))
        if _pylog.isEnabledFor(_LEVELS[level]):
            _pylog.log(_LEVELS[level], "[%s #%s] %s", self._name, self._job_id, text)

    def debug(self, message: object, *args: object) -> None:
        self._write("debug", message, *args)

    def info(self, message: object, *args: object) -> None:
        self._write("info", message, *args)

    def warning(self, message: object, *args: object) -> None:
        self._write("warning", message, *args)

    def error(self, message: object, *args: object) -> None:
        self._write("error", message, *args)

    def critical(self, message: object, *args: object) -> None:
        self._write("critical", message, *args)


class Context:
    """What a handler gets besides its payload.

    Attributes:
        job_id: the job's id.
        name: the job's name.
        attempt: this run's number (1-based): runs started, counting the runs whose
            worker died (stalls).
        max_attempts: the number ``attempt`` may reach: the job's ``attempts`` plus the
            runs that stalled (which use up no attempt), so ``attempt == max_attempts``
            on the last try.
        tenant, channel, tags, priority: as enqueued.
        schedule: the cron schedule's name when a schedule enqueued the job, else None.
        scheduled_for: the schedule tick this run is for (aware UTC datetime), else None.
        replayed: True when the schedule fired this tick late, replaying a tick missed
            while nothing ran (only within the schedule's ``catch_up`` window).
    """

    def __init__(
        self,
        *,
        job_id: int,
        name: str,
        attempt: int,
        max_attempts: int,
        tenant: str | None,
        channel: str,
        tags: tuple[str, ...],
        priority: int,
        clock: Callable[[], float],
        progress: Callable[[int], Awaitable[None]],
        control: Control | None = None,
        schedule: str | None = None,
        scheduled_for: datetime | None = None,
        replayed: bool = False,
    ):
        self.job_id = job_id
        self.name = name
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.tenant = tenant
        self.channel = channel
        self.tags = tags
        self.priority = priority
        self.schedule = schedule
        self.scheduled_for = scheduled_for
        self.replayed = replayed
        self._progress = progress
        self._control = control if control is not None else Control()
        self.log = JobLogger(name, job_id, clock, self._control)

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled, timed out, or the worker is stopping it."""
        return self._control.cancel_reason is not None

    @property
    def cancel_reason(self) -> str | None:
        """Why the job is being stopped (``timeout``, ``cancel``, ``drain``, …), or None."""
        return self._control.cancel_reason

    def set_progress(self, progress: int | float) -> Awaitable[None]:
        """Persist progress, 0..100 (a ``progress`` event is stored and emitted).

        ``await ctx.set_progress(50)`` in async handlers; in a plain ``def`` handler (a
        worker thread) call ``ctx.set_progress(50)``: it returns once stored.
        """
        if (
            isinstance(progress, bool)
            or not isinstance(progress, int | float)
            or not 0 <= progress <= 100
        ):
            raise ValidationError(f"progress must be a number from 0 to 100, got {progress!r}")
        coro = self._progress(int(progress))
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._control.loop is None:
                asyncio.run(coro)  # type: ignore[arg-type]
            else:
                asyncio.run_coroutine_threadsafe(coro, self._control.loop).result(timeout=60)  # type: ignore[arg-type]
            return _Done()
        return asyncio.ensure_future(coro)

    def extend_timeout(self, seconds: float | timedelta | None = None) -> None:
        """Push the deadline to ``seconds`` from now; without an argument, reset it to the
        job's whole timeout from now (no-op for jobs without a timeout)."""
        control = self._control
        if seconds is None:
            if control.deadline is not None and control.timeout is not None:
                control.deadline = time.monotonic() + control.timeout
            return
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ValidationError(f"extend_timeout needs seconds > 0, got {seconds!r}")
        if control.deadline is not None:
            control.deadline = max(control.deadline, time.monotonic() + float(seconds))

    def on_timeout(self, callback: Callable[[], float | timedelta | None]) -> None:
        """Call ``callback()`` (sync, on the worker's event loop) when the deadline passes;
        returning seconds (or a timedelta) > 0 extends the deadline by that much and the
        handler keeps running, returning None lets the job time out (dataqueue's
        onTimeout). Not for ``kill_on_timeout`` handlers, whose child is killed."""
        if not callable(callback):
            raise ValidationError("on_timeout takes a callable")
        self._control.on_timeout.append(callback)  # type: ignore[arg-type]

    @property
    def deadline(self) -> float | None:
        """Monotonic deadline of this attempt (None: no timeout)."""
        return self._control.deadline

    def __repr__(self) -> str:
        return f"<Context job={self.name!r} id={self.job_id} attempt={self.attempt}/{self.max_attempts}>"

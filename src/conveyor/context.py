"""The Context handed to every handler: progress, logs, cancellation, timeout control, and
durable execution (steps, sleeps, tokens)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from conveyor._json import ENCODER, has_surrogate
from conveyor.clock import NEVER, from_ts
from conveyor.durations import Duration, parse_duration
from conveyor.errors import PayloadError, ValidationError
from conveyor.models import Token, TokenResult

__all__ = ["Context", "Control", "Durable", "JobLogger", "Suspend"]

T = TypeVar("T")
#: Step names the engine uses for its own records (waits, tokens): refused for user steps.
RESERVED_PREFIX = "conveyor:"


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


class Suspend(BaseException):
    """Raised by ``ctx.sleep`` / ``ctx.wait_for_token`` to end the attempt and wait (state
    ``waiting``) until ``until`` (epoch seconds) or until ``token`` is completed. A
    BaseException, so a handler's ``except Exception`` does not swallow it; the executor
    turns it into the ``waiting`` transition."""

    def __init__(self, until: float, token: str | None, data: dict[str, Any]):
        super().__init__(f"waiting until {until}" if token is None else f"waiting for {token}")
        self.until, self.token, self.data = until, token, data


class Durable(Protocol):
    """The worker's side of durable execution for one attempt (steps stored with the job,
    fenced by its lease)."""

    def now(self) -> float: ...
    async def load(self) -> dict[str, str]:
        """The job's stored steps: name -> JSON text of the result."""
        ...

    async def save(self, name: str, result: str, token: Token | None = None) -> None:
        """Store a step (and ``token`` with it, as pending); stops the attempt when its
        lease is lost."""
        ...

    async def token(self, token_id: str) -> Token | None:
        """The token ``token_id`` of this job (None: unknown or another job's); a pending
        token past its expiry reads as ``expired``."""
        ...


def _step_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValidationError(
            f"a step name must be a non-empty str of at most 200 characters, got {name!r}"
        )
    if name.startswith(RESERVED_PREFIX):
        raise ValidationError(
            f"step name {name!r}: names starting with {RESERVED_PREFIX!r} are reserved"
        )
    if has_surrogate(name) or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValidationError(f"step name {name!r} holds control characters or lone surrogates")
    return name


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
        batch: for a batch's ``on_complete`` job, ``{"id", "total", "completed",
            "failed", "cancelled"}``; else None.
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
        durable: Durable | None = None,
        batch: Mapping[str, Any] | None = None,
        dependencies: Callable[[], Awaitable[dict[int, Any]]] | None = None,
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
        self._durable = durable
        self.batch = batch
        self._dependencies = dependencies
        self._steps: dict[str, str] | None = None  # loaded on the first durable call
        self._used: set[str] = set()  # step names this run used (unique per run)
        self._waits = 0  # waits (sleeps, token waits) reached in this run: their positions
        self._tokens = 0  # tokens created in this run: their positions

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

    async def dependency_results(self) -> dict[int, Any]:
        """The results of the jobs this one depends on (``depends_on``), by job id (None
        for one that returned nothing or was removed); ``{}`` without dependencies."""
        if self._dependencies is None:
            return {}
        return await self._dependencies()

    # -- durable execution ----------------------------------------------------------------
    def step(self, name: str, fn: Callable[[], T | Awaitable[T]]) -> Coroutine[Any, Any, T]:
        """Run ``fn`` (sync, or returning an awaitable) once for this job and store its JSON
        result; on every later run (a retry, a resume after a wait, a rescue after a
        crash) return the stored result without calling ``fn``. The result comes back as
        JSON gives it (a tuple becomes a list) on the first run too, so every run sees
        the same value. A step that raises is not stored and runs again next time.

        ``name`` must be unique within a run and stable across runs (not built from the
        time or a random value). Async handlers only: ``await ctx.step(...)``."""
        return self._step(_step_name(name), fn, self._durable_for("step"))

    def sleep(self, duration: Duration) -> Coroutine[Any, Any, None]:
        """Wait ``duration`` (seconds, timedelta or ``"12h"``) without holding a worker
        slot: the attempt ends (state ``waiting``) and the job runs again from the top
        when due, completed steps replaying from storage. The wait's end is stored the
        first time this sleep is reached, so a re-run never sleeps again from scratch."""
        seconds = parse_duration(duration, "sleep duration", positive=False)
        return self._sleep(lambda now: now + seconds, self._durable_for("sleep"))

    def sleep_until(self, when: datetime) -> Coroutine[Any, Any, None]:
        """Like :meth:`sleep`, until the aware datetime ``when`` (a past one returns at once)."""
        if not isinstance(when, datetime) or when.tzinfo is None or when.utcoffset() is None:
            raise ValidationError(f"sleep_until needs a timezone-aware datetime, got {when!r}")
        until = when.timestamp()
        return self._sleep(lambda now: until, self._durable_for("sleep_until"))

    def create_token(
        self, timeout: Duration | None = None, tags: Sequence[str] = ()
    ) -> Coroutine[Any, Any, Token]:
        """A token that someone completes later with ``queue.complete_token(token.id,
        data)``; ``timeout`` (None: never) after which a wait on it returns ``ok=False``.
        Memoised by its position among this job's tokens: a re-run gets the same token."""
        seconds = None if timeout is None else parse_duration(timeout, "token timeout")
        if isinstance(tags, str) or not all(isinstance(t, str) and t for t in tags):
            raise ValidationError(f"token tags must be a list of non-empty strings, got {tags!r}")
        return self._create_token(seconds, tuple(tags), self._durable_for("create_token"))

    def wait_for_token(self, token: Token | str) -> Coroutine[Any, Any, TokenResult]:
        """Wait, holding no worker slot, until ``token`` is completed (``TokenResult(True,
        data)``) or times out (``TokenResult(False)``). Waits are recorded by position:
        keep the order of waits stable between runs."""
        token_id = token.id if isinstance(token, Token) else token
        if not isinstance(token_id, str) or not token_id:
            raise ValidationError(f"wait_for_token needs a Token or its id, got {token!r}")
        return self._wait_for_token(token_id, self._durable_for("wait_for_token"))

    def _durable_for(self, what: str) -> Durable:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise ValidationError(
                f"ctx.{what} needs an async handler (async def ...: await ctx.{what}(...))"
            ) from None
        if self._durable is None:
            raise ValidationError(
                f"ctx.{what} is not available here (kill_on_timeout handlers and contexts "
                "built outside a worker have no durable storage)"
            )
        return self._durable

    async def _stored(self, durable: Durable) -> dict[str, str]:
        if self._steps is None:
            self._steps = await durable.load()
        return self._steps

    async def _record(
        self, durable: Durable, name: str, value: Any, token: Token | None = None
    ) -> str:
        text = ENCODER.encode(value)
        await durable.save(name, text, token)
        assert self._steps is not None
        self._steps[name] = text
        return text

    async def _step(self, name: str, fn: Callable[[], Any], durable: Durable) -> Any:
        if name in self._used:
            raise ValidationError(
                f"step name {name!r} is used twice in one run: step names must be unique"
            )
        self._used.add(name)
        stored = await self._stored(durable)
        if name in stored:
            return json.loads(stored[name])
        value = fn()
        if inspect.isawaitable(value):
            value = await value
        try:
            text = ENCODER.encode(value)
        except (TypeError, ValueError) as exc:
            raise PayloadError(f"step {name!r} returned a value that is not JSON: {exc}") from None
        if has_surrogate(text):
            raise PayloadError(
                f"step {name!r} returned text with lone surrogates (not valid Unicode)"
            )
        await durable.save(name, text)
        stored[name] = text
        return json.loads(text)

    async def _sleep(self, until_from: Callable[[float], float], durable: Durable) -> None:
        self._waits += 1
        name = f"{RESERVED_PREFIX}wait:{self._waits}"
        stored = await self._stored(durable)
        now = durable.now()
        if name in stored:
            until = float(json.loads(stored[name])["until"])
        else:
            until = until_from(now)
            await self._record(durable, name, {"kind": "sleep", "until": until})
        if now >= until:
            return
        raise Suspend(until, None, {"reason": "sleep", "until": until})

    async def _create_token(
        self, seconds: float | None, tags: tuple[str, ...], durable: Durable
    ) -> Token:
        self._tokens += 1
        name = f"{RESERVED_PREFIX}token:{self._tokens}"
        stored = await self._stored(durable)
        if name in stored:
            record = json.loads(stored[name])
            return Token(
                record["id"],
                from_ts(record["expires_at"]),
                job_id=self.job_id,
                tags=tuple(record.get("tags", ())),
            )
        expires = None if seconds is None else durable.now() + seconds
        token = Token(secrets.token_urlsafe(24), from_ts(expires), job_id=self.job_id, tags=tags)
        await self._record(
            durable, name, {"id": token.id, "expires_at": expires, "tags": list(tags)}, token
        )
        return token

    async def _wait_for_token(self, token_id: str, durable: Durable) -> TokenResult:
        self._waits += 1
        name = f"{RESERVED_PREFIX}wait:{self._waits}"
        stored = await self._stored(durable)
        if name in stored:
            record = json.loads(stored[name])
            if record.get("token") != token_id:
                raise ValidationError(
                    f"wait {self._waits} of this job waited on token {record.get('token')!r} "
                    f"before and now on {token_id!r}: keep the order of waits stable"
                )
            return TokenResult(bool(record["ok"]), record.get("data"))
        token = await durable.token(token_id)
        if token is None:
            raise ValidationError(f"token {token_id!r} is not a token of this job")
        if token.state == "pending":
            until = NEVER if token.expires_at is None else token.expires_at.timestamp()
            raise Suspend(until, token_id, {"reason": "token", "token": token_id})
        result = TokenResult(token.state == "completed", token.data)
        await self._record(
            durable,
            name,
            {"kind": "token", "token": token_id, "ok": result.ok, "data": result.data},
        )
        return result

    @property
    def deadline(self) -> float | None:
        """Monotonic deadline of this attempt (None: no timeout)."""
        return self._control.deadline

    def __repr__(self) -> str:
        return f"<Context job={self.name!r} id={self.job_id} attempt={self.attempt}/{self.max_attempts}>"

"""An in-process event bus, and the bridge that turns its events into jobs.

Apps publish record events (``"order.created"`` with ``{"record_id", "record",
"user_id"}``) on an :class:`EventBus`; :func:`attach` (``queue.attach(bus, rules=…)``)
makes the queue listen to it:

- a ``"job:enqueue"`` event ``{"name", "payload", "options"}`` enqueues that job, so code
  can defer work without importing the queue;
- each :class:`Rule` turns matching record events into jobs;
- the queue republishes ``job.completed``, ``job.failed`` and ``job.stalled``.

Rules never fire on ``job.*`` (nor on ``job:*`` commands), so a ``"*"`` rule cannot loop.
Nothing here raises into :meth:`EventBus.emit`: a failing callback, ``build`` or enqueue is
logged (logger ``conveyor``) and the other subscribers still run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from conveyor.errors import ValidationError
from conveyor.models import Event
from conveyor.validation import job_spec

if TYPE_CHECKING:
    from conveyor.engine import Engine

__all__ = ["Attachment", "BusCallback", "EventBus", "Rule", "attach", "matches"]

log = logging.getLogger("conveyor")

BusCallback = Callable[[str, dict[str, Any]], Any]
"""``callback(type, data)``; may be sync or async."""

BuildResult = Mapping[str, Any] | None
BuildFn = Callable[[dict[str, Any]], BuildResult | Awaitable[BuildResult]]

ENQUEUE_EVENT = "job:enqueue"
#: Queue lifecycle events republished on the bus, as ``job.<type>``.
REPUBLISHED = ("completed", "failed", "stalled")


def matches(pattern: str, event_type: str) -> bool:
    """Whether ``event_type`` matches ``pattern`` (fnmatch-style, case-sensitive).

    ``*`` matches any run of characters, dots included: ``"user.*"`` matches
    ``"user.created"`` and ``"user.profile.updated"``, and ``"*"`` matches every event.
    ``?`` and ``[…]`` work as in :mod:`fnmatch`.
    """
    return fnmatchcase(event_type, pattern)


def _check_pattern(pattern: object) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise ValidationError(f"an event pattern must be a non-empty string, got {pattern!r}")
    return pattern


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_coroutine(coro: Coroutine[Any, Any, Any], tasks: set[asyncio.Task[Any]]) -> None:
    """Schedule ``coro`` on the running loop, or run it to completion when there is none.

    The task is held in ``tasks`` until done (the loop keeps only weak references), and
    its exception is logged.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        try:
            asyncio.run(coro)
        except Exception:
            log.exception("event bus: async callback failed")
        return
    task = loop.create_task(coro)
    tasks.add(task)
    task.add_done_callback(lambda t: _task_done(t, tasks))


def _task_done(task: asyncio.Task[Any], tasks: set[asyncio.Task[Any]]) -> None:
    tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("event bus: async callback failed", exc_info=task.exception())


class EventBus:
    """A small in-process publish/subscribe bus with wildcard patterns.

    Callbacks get ``(type, data)`` and run in registration order. Sync callbacks run
    inline, inside :meth:`emit`; async callbacks are scheduled as tasks on the running
    loop, so :meth:`emit` does not wait for them. Called from sync code (no running
    loop), an async callback instead runs to completion on a fresh event loop before
    :meth:`emit` returns, so events emitted from scripts or sync views are not dropped.
    A callback that raises is logged (logger ``conveyor``) and never reaches the caller
    of :meth:`emit` or the other callbacks.
    """

    def __init__(self) -> None:
        self._subscriptions: list[tuple[str, BusCallback]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def on(self, pattern: str, callback: BusCallback) -> None:
        """Call ``callback(type, data)`` for every event whose type matches ``pattern``.

        Args:
            pattern: an event type, or a wildcard pattern (``"user.*"``, ``"*"``); see
                :func:`matches`.
            callback: a sync or async callable taking ``(type, data)``.

        Raises:
            ValidationError: the pattern is empty or the callback not callable.
        """
        _check_pattern(pattern)
        if not callable(callback):
            raise ValidationError("callback must be callable")
        self._subscriptions.append((pattern, callback))

    def off(self, pattern: str, callback: BusCallback) -> None:
        """Remove one registration of ``callback`` for exactly ``pattern`` (no-op if none).

        Args:
            pattern: the pattern given to :meth:`on`.
            callback: the callback given to :meth:`on`.
        """
        for i, (p, cb) in enumerate(self._subscriptions):
            if p == pattern and cb == callback:
                del self._subscriptions[i]
                return

    def emit(self, type: str, data: Mapping[str, Any] | None = None) -> None:
        """Publish an event to every matching subscriber.

        Args:
            type: the event type, e.g. ``"order.created"``.
            data: the event's data (``{}`` when None); each callback gets its own copy.

        Raises:
            ValidationError: ``type`` is not a non-empty string.
        """
        _check_pattern(type)
        payload = dict(data) if data is not None else {}
        for pattern, callback in list(self._subscriptions):  # callbacks may call on/off
            if not matches(pattern, type):
                continue
            try:
                result = callback(type, dict(payload))
            except Exception:
                log.exception("event bus: callback %r failed for %s", callback, type)
                continue
            if inspect.iscoroutine(result):
                _run_coroutine(result, self._tasks)
            elif inspect.isawaitable(result):
                _run_coroutine(_awaiting(result), self._tasks)

    async def drain(self) -> None:
        """Wait until the async callbacks scheduled so far have finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _awaiting(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


@dataclass(frozen=True, slots=True)
class Rule:
    """Turns record events on the bus into jobs (see :func:`attach`).

    Args:
        events: a pattern, or a list of them, matched against event types (``job.*``
            and ``job:*`` events never match).
        build: ``build(event)`` (sync or async) gets ``{**data, "type": type}`` and returns
            ``{"name", "payload", "options"}`` (``options``: enqueue keyword arguments,
            optional; ``"tenant"``: optional) or None to skip the event.
    """

    events: str | Sequence[str]
    build: BuildFn

    def __post_init__(self) -> None:
        patterns = [self.events] if isinstance(self.events, str) else list(self.events)
        if not patterns:
            raise ValidationError("Rule(events=…) needs at least one pattern")
        for pattern in patterns:
            _check_pattern(pattern)
        if not callable(self.build):
            raise ValidationError("Rule(build=…) must be callable")

    @property
    def patterns(self) -> tuple[str, ...]:
        """The rule's patterns as a tuple."""
        return (self.events,) if isinstance(self.events, str) else tuple(self.events)

    def wants(self, event_type: str) -> bool:
        """Whether this rule fires for ``event_type``."""
        if event_type.startswith(("job.", "job:")):
            return False
        return any(matches(p, event_type) for p in self.patterns)


def _tenant_value(value: Any) -> Any:
    # User ids are often ints; tenants are strings.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Attachment:
    """A queue listening to a bus; made by :func:`attach` (``queue.attach(bus)``).

    Enqueues triggered by the bus run after :meth:`EventBus.emit` returns (as tasks on
    the running loop; from sync code, before it returns, through ``enqueue_sync``). Their
    errors are logged, never raised into ``emit``.
    """

    def __init__(self, engine: Engine, bus: EventBus, rules: Sequence[Rule] = ()) -> None:
        for rule in rules:
            if not isinstance(rule, Rule):
                raise ValidationError(f"rules must be conveyor.Rule, got {type(rule).__name__}")
        self.engine = engine
        self.bus = bus
        self.rules = tuple(rules)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warned_dormant = False
        self._republishers: list[tuple[str, Callable[[Event], None]]] = []
        bus.on(ENQUEUE_EVENT, self._on_enqueue)
        if self.rules:
            bus.on("*", self._on_record)
        for kind in REPUBLISHED:
            callback = self._republisher(kind)
            engine.dispatcher.on(kind, callback)
            self._republishers.append((kind, callback))

    def detach(self) -> None:
        """Stop listening to the bus and stop republishing job events."""
        self.bus.off(ENQUEUE_EVENT, self._on_enqueue)
        if self.rules:
            self.bus.off("*", self._on_record)
        for kind, callback in self._republishers:
            self.engine.dispatcher.off(kind, callback)
        self._republishers.clear()

    async def drain(self) -> None:
        """Wait until the enqueues triggered so far have finished (e.g. at shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- bus → queue -------------------------------------------------------------------------
    def _dormant(self, what: str) -> bool:
        if not self.engine.dormant:
            return False
        if not self._warned_dormant:
            self._warned_dormant = True
            log.warning(
                "the job queue is dormant (no CONVEYOR_URL): bus events do not enqueue jobs "
                "(first dropped: %s)",
                what,
            )
        else:
            log.debug("dormant queue: dropped %s", what)
        return True

    def _on_enqueue(self, type: str, data: dict[str, Any]) -> None:
        if self._dormant(f"{type} {data.get('name')!r}"):
            return
        self._submit(data, None, type)

    def _on_record(self, type: str, data: dict[str, Any]) -> None:
        rules = [r for r in self.rules if r.wants(type)]
        if not rules or self._dormant(type):
            return
        event = {**data, "type": type}
        for rule in rules:
            try:
                built = rule.build(dict(event))
            except Exception:
                log.exception("event bus: rule build %r failed for %s", rule.build, type)
                continue
            if not inspect.isawaitable(built):
                self._submit(built, event, type)
            elif _loop_running():
                self._spawn(self._build_then_enqueue(built, event, type))
            else:  # sync caller: build on a fresh loop, then enqueue_sync
                try:
                    result = asyncio.run(_awaiting(built))
                except Exception:
                    log.exception("event bus: async rule build failed for %s", type)
                    continue
                self._submit(result, event, type)

    async def _build_then_enqueue(
        self, built: Awaitable[BuildResult], event: dict[str, Any], type: str
    ) -> None:
        try:
            result = await built
        except Exception:
            log.exception("event bus: async rule build failed for %s", type)
            return
        spec = self._spec(result, event, type)
        if spec is not None:
            await self._enqueue_async(spec, type)

    def _submit(self, result: BuildResult, event: dict[str, Any] | None, type: str) -> None:
        spec = self._spec(result, event, type)
        if spec is None:
            return
        if _loop_running():
            self._spawn(self._enqueue_async(spec, type))
        else:
            self._enqueue_sync(spec, type)

    def _spec(
        self, result: BuildResult, event: dict[str, Any] | None, type: str
    ) -> tuple[str, Any, dict[str, Any]] | None:
        """``(name, payload, options)`` from a job:enqueue body or a rule's result."""
        if result is None:
            return None
        if not isinstance(result, Mapping) or not isinstance(result.get("name"), str):
            log.error("event bus: %s did not give a job {'name', …}: %r", type, result)
            return None
        options = result.get("options") or {}
        if not isinstance(options, Mapping):
            log.error("event bus: %s gave options that are not a dict: %r", type, options)
            return None
        options = dict(options)
        if "connection" in options:
            log.error("event bus: %s: connection= cannot be used from the bus", type)
            return None
        if event is not None:  # a rule: options["tenant"], else result["tenant"], else user_id
            tenant = options.get("tenant")
            if tenant is None:
                tenant = result.get("tenant")
            if tenant is None:
                tenant = event.get("user_id")
            if tenant is not None:
                options["tenant"] = _tenant_value(tenant)
        return result["name"], result.get("payload"), options

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        _run_coroutine(coro, self._tasks)

    async def _enqueue_async(self, spec: tuple[str, Any, dict[str, Any]], type: str) -> None:
        name, payload, options = spec
        try:
            await self.engine.enqueue([job_spec(name, payload, options)])
        except Exception:
            log.exception("event bus: enqueue of %r (from %s) failed", name, type)

    def _enqueue_sync(self, spec: tuple[str, Any, dict[str, Any]], type: str) -> None:
        name, payload, options = spec
        try:
            self.engine.enqueue_sync([job_spec(name, payload, options)])
        except Exception:
            log.exception("event bus: enqueue of %r (from %s) failed", name, type)

    # -- queue → bus -------------------------------------------------------------------------
    def _republisher(self, kind: str) -> Callable[[Event], None]:
        key = "result" if kind == "completed" else "error"

        def republish(event: Event) -> None:
            self.bus.emit(
                f"job.{kind}",
                {
                    "job_id": event.job_id,
                    "name": event.job_name,
                    "tenant": event.tenant,
                    "attempt": event.attempt,
                    key: event.data.get(key),
                },
            )

        return republish


def attach(engine: Engine, bus: EventBus, rules: Sequence[Rule] = ()) -> Attachment:
    """Make ``queue`` listen to ``bus`` (``queue.attach(bus, rules=…)``).

    - A ``"job:enqueue"`` event ``{"name", "payload", "options"}`` enqueues that job
      (``options`` are :meth:`conveyor.Queue.enqueue` keyword arguments).
    - Each rule turns matching record events into jobs; the job's tenant is
      ``options["tenant"]``, else the rule result's ``"tenant"``, else the event's
      ``user_id`` (an int becomes its string).
    - The queue republishes ``job.completed`` / ``job.failed`` / ``job.stalled`` of this
      process's jobs with ``{"job_id", "name", "tenant", "attempt", "result" | "error"}``.

    When the queue is dormant, bus events enqueue nothing and one warning is logged.

    Args:
        engine: the queue's engine: it enqueues, and its job events are republished.
        bus: the event bus to listen to and publish on.
        rules: :class:`Rule` objects, applied in order (each matching rule makes a job).

    Returns:
        An :class:`Attachment`; ``detach()`` undoes it.

    Raises:
        ValidationError: an item of ``rules`` is not a :class:`Rule`.
    """
    return Attachment(engine, bus, rules)

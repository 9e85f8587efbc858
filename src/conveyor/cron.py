"""Cron and interval schedules: storing them and firing each tick exactly once.

Policy lives here (which tick is next, what a missed tick means, overlap); the backend's
``fire_cron`` is a compare-and-swap on the schedule's ``next_run_at`` done in the same
transaction as the job's insert, so any number of processes can run this at once and a
tick fires once, also when a clock steps back (the stored next tick stays in the future).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from conveyor.backends.base import Backend, CronFire, CronPause, CronRecord, NewJob
from conveyor.errors import ValidationError
from conveyor.models import UPCOMING_STATES, CronSchedule, CronSpec, JobSpec, JobState
from conveyor.retry import Backoff
from conveyor.scheduling import compile_schedule
from conveyor.validation import validate_name

if TYPE_CHECKING:
    from conveyor.engine import Engine

__all__ = [
    "KEEP",
    "edit",
    "fire_due",
    "list_schedules",
    "remove",
    "run_now",
    "set_paused",
    "sync",
    "sync_definition_schedules",
    "upsert",
]

#: An :func:`edit` argument left out: the schedule keeps what it has.
KEEP: Any = object()

log = logging.getLogger("conveyor")

#: A tick counts as on time when found within this many seconds; older ticks were missed
#: (nothing was running) and are not replayed unless the schedule's ``catch_up`` allows.
MISFIRE_GRACE = 60.0


def _record(spec: CronSpec, engine: Engine, existing: CronRecord | None, now: float) -> CronRecord:
    name = validate_name(spec.name, "schedule name")
    job = validate_name(spec.job or spec.name, "job name")
    if spec.expression is None and spec.every is None:
        raise ValidationError(f"schedule {name!r} needs an expression or every=")
    schedule = compile_schedule(spec.expression, every=spec.every, timezone=spec.timezone)
    try:
        payload = json.dumps({} if spec.payload is None else spec.payload, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            f"schedule {name!r}: payload is not JSON-serialisable: {exc}"
        ) from None
    options: dict[str, Any] = {}
    if spec.priority is not None:
        options["priority"] = spec.priority
    if spec.attempts is not None:
        options["attempts"] = spec.attempts
    if spec.backoff is not None:
        if not isinstance(spec.backoff, Backoff):
            raise ValidationError("backoff must be a conveyor.Backoff")
        options["backoff"] = spec.backoff.to_dict()
    # Validate the job options now, not at the first tick.
    engine.build(
        JobSpec(
            job,
            json.loads(payload),
            priority=spec.priority,
            attempts=spec.attempts,
            backoff=spec.backoff,
        ),
        now,
        system=True,
    )
    catch_up = None
    if spec.catch_up is not None:
        catch_up = (
            spec.catch_up.total_seconds()
            if isinstance(spec.catch_up, timedelta)
            else float(spec.catch_up)
        )
        if catch_up < 0:
            raise ValidationError(f"schedule {name!r}: catch_up must be >= 0")
    same = (
        existing is not None
        and existing.expression == schedule.expression
        and existing.timezone == spec.timezone
        and existing.next_run_at is not None
    )
    next_run_at = existing.next_run_at if same and existing else schedule.next_after(now)
    return CronRecord(
        name=name,
        expression=schedule.expression,
        job=job,
        payload=payload,
        timezone=spec.timezone,
        paused=existing.paused if existing is not None else False,
        allow_overlap=spec.allow_overlap,
        catch_up=catch_up,
        options=json.dumps(options) if options else None,
        next_run_at=next_run_at,
        last_run_at=existing.last_run_at if existing else None,
        last_job_id=existing.last_job_id if existing else None,
    )


async def upsert(engine: Engine, specs: Sequence[CronSpec]) -> list[CronRecord]:
    """Create or update schedules; every spec is validated before any is stored."""
    backend = await engine.ready()
    now = engine.clock.now()
    existing = {r.name: r for r in await backend.list_cron()}
    records = [_record(spec, engine, existing.get(spec.name), now) for spec in specs]
    for record in records:
        await backend.upsert_cron(record)
    return records


def _declared(engine: Engine) -> list[CronSpec]:
    """Schedules declared with ``@queue.job(cron=… | every=…)``."""
    return [
        CronSpec(
            d.name,
            d.cron,
            job=d.name,
            timezone=d.timezone,
            every=d.every,
            allow_overlap=d.allow_overlap,
            catch_up=d.catch_up,
        )
        for d in engine.definitions.values()
        if d.cron is not None or d.every is not None
    ]


async def sync_definition_schedules(engine: Engine) -> None:
    """Store the schedules declared on job definitions (at migrate and worker start)."""
    specs = _declared(engine)
    if specs:
        await upsert(engine, specs)


async def sync(engine: Engine, specs: Sequence[CronSpec]) -> None:
    """Make the stored schedules exactly ``specs`` plus the declared ones."""
    specs = list(specs)
    await upsert(engine, specs)
    keep = {s.name for s in specs} | {s.name for s in _declared(engine)}
    backend = await engine.ready()
    stale = [r.name for r in await backend.list_cron() if r.name not in keep]
    if stale:
        await backend.delete_cron(stale)


async def remove(engine: Engine, name: str) -> bool:
    """Delete a schedule; False if there was none."""
    return bool(await (await engine.ready()).delete_cron([name]))


async def list_schedules(engine: Engine, paused: bool | None = None) -> list[CronSchedule]:
    """Every stored schedule, or only the paused (``True``) or active (``False``) ones."""
    backend = await engine.ready()
    records = await backend.list_cron()
    return [r.to_schedule() for r in records if paused is None or r.paused is paused]


async def _record_named(engine: Engine, name: str) -> CronRecord:
    backend = await engine.ready()
    for record in await backend.list_cron():
        if record.name == name:
            return record
    raise ValidationError(f"no schedule named {name!r}")


async def edit(engine: Engine, name: str, changes: dict[str, Any]) -> CronRecord:
    """Change only the given fields of schedule ``name`` (``KEEP`` values are left as
    they are); a new expression, interval or zone takes effect at once."""
    record = await _record_named(engine, name)
    options = json.loads(record.options) if record.options else {}
    current: dict[str, Any] = {
        "expression": record.expression,
        "every": None,
        "job": record.job,
        "payload": json.loads(record.payload),
        "timezone": record.timezone,
        "allow_overlap": record.allow_overlap,
        "catch_up": None if record.catch_up is None else timedelta(seconds=record.catch_up),
        "priority": options.get("priority"),
        "attempts": options.get("attempts"),
        "backoff": Backoff.from_dict(options["backoff"]) if "backoff" in options else None,
    }
    given = {k: v for k, v in changes.items() if v is not KEEP}
    unknown = set(given) - set(current)
    if unknown:
        raise ValidationError(f"edit_cron: unknown field(s) {sorted(unknown)}")
    if given.get("every") is not None:
        current["expression"] = None  # an interval replaces the expression
    elif given.get("expression") is not None:
        current["every"] = None
    current.update(given)
    (updated,) = await upsert(engine, [CronSpec(name, **current)])
    return updated


async def run_now(engine: Engine, name: str) -> int:
    """Enqueue schedule ``name``'s job now, once, without moving its next tick (paused
    schedules too); returns the job's id."""
    record = await _record_named(engine, name)
    now = engine.clock.now()
    job = _build_job(engine, record, now, now, replayed=False, manual=True)
    (job_id,) = await engine.store([job])
    return job_id


async def set_paused(engine: Engine, name: str, paused: bool) -> None:
    backend = await engine.ready()
    records = {r.name: r for r in await backend.list_cron()}
    record = records.get(name)
    if record is None:
        raise ValidationError(f"no schedule named {name!r}")
    next_run_at = None
    if not paused:  # ticks missed while paused are not replayed
        next_run_at = compile_schedule(record.expression, timezone=record.timezone).next_after(
            engine.clock.now()
        )
    await backend.set_cron_paused(CronPause(name, paused, next_run_at))


async def fire_due(engine: Engine, backend: Backend, now: float) -> int:
    """Fire every schedule tick that is due; returns how many jobs were enqueued."""
    fired = 0
    for record in await backend.list_cron():
        if record.paused or record.next_run_at is None or record.next_run_at > now:
            continue
        try:
            fired += await _fire_schedule(engine, backend, record, now)
        except ValidationError as exc:
            log.error("schedule %r cannot fire: %s", record.name, exc)
    return fired


async def _fire_schedule(engine: Engine, backend: Backend, record: CronRecord, now: float) -> int:
    schedule = compile_schedule(record.expression, timezone=record.timezone)
    tick = record.next_run_at
    fired = 0
    last_job_id = record.last_job_id
    while tick is not None and tick <= now:
        late = now - tick
        replay = record.catch_up is not None and late <= record.catch_up
        if late > MISFIRE_GRACE and not replay:
            # Missed while nothing ran: skip without enqueueing, to the first tick inside the
            # catch-up window (those are replayed) or else to the next future tick.
            start = now - record.catch_up if record.catch_up else now
            target = schedule.next_after(start)  # may be the next future tick: fine
            skipped = await backend.fire_cron(
                CronFire(record.name, tick, target, record.last_run_at or tick, None, now)
            )
            if not skipped.won:
                return fired
            tick = target
            continue
        new_next = schedule.next_after(tick)
        job = None
        if record.allow_overlap or not await _unfinished(backend, last_job_id):
            job = _build_job(engine, record, tick, now, replayed=late > MISFIRE_GRACE)
        fired_tick = await backend.fire_cron(CronFire(record.name, tick, new_next, tick, job, now))
        job_id = fired_tick.job_id
        if not fired_tick.won:
            return fired  # another process fired this tick
        if job_id is not None:
            fired += 1
            last_job_id = job_id
            engine.emit(
                "cron_fired", job_id, record.job, None, 0, {"schedule": record.name, "tick": tick}
            )
            engine.emit("enqueued", job_id, record.job, None, 0)
        else:
            log.info(
                "schedule %r skipped tick %s: the previous run is unfinished", record.name, tick
            )
        tick = new_next
    return fired


async def _unfinished(backend: Backend, job_id: int | None) -> bool:
    if job_id is None:
        return False
    job = await backend.get_job(job_id)
    return job is not None and (job.state in UPCOMING_STATES or job.state is JobState.RUNNING)


def _build_job(
    engine: Engine,
    record: CronRecord,
    tick: float,
    now: float,
    *,
    replayed: bool,
    manual: bool = False,
) -> NewJob:
    options = json.loads(record.options) if record.options else {}
    backoff = Backoff.from_dict(options["backoff"]) if "backoff" in options else None
    spec = JobSpec(
        record.job,
        json.loads(record.payload),
        priority=options.get("priority"),
        attempts=options.get("attempts"),
        backoff=backoff,
        # one job per tick, whatever number of processes fire it; a manual run is its own
        idempotency_key=None if manual else f"cron:{record.name}:{tick!r}",
    )
    cron_info = {"schedule": record.name, "tick": tick, "replayed": replayed}
    return engine.build(
        spec, now, extra_options={"cron": cron_info}, system=True, checked_name=True
    )
